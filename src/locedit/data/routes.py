"""Other routes to a fact of the world: aliases, descriptions and reverse statements.

The generalisation probes (:mod:`locedit.editing.probes`) ask whether an edit of
``(subject, relation)`` changed the *fact* or only the continuation of the subject's *tokens*
(the post on ROME's limits, ``../shared/papers/004``). For that the world must let the model reach
a subject's facts without its name, and reach the subject from its facts. Three opt-in features,
each a count in the ``world`` config section (0 = off, the default, so the default world's
records and corpus are unchanged; their draws come from their own ``routes`` RNG stream):

* **Aliases** (``n_aliases`` subjects): a second invented name, introduced in the corpus
  (``"{subject}, also known as {alias}, ..."``) and used to state each of the subject's facts
  once more, through one of the fact's trained templates.
* **Descriptions** (``n_descriptions`` subjects): a defining relation that identifies the subject
  uniquely, *the founder of* an invented organisation (``"{subject} founded {org}."``,
  ``"The founder of {org} is {subject}."``); each fact of the subject is stated once more through
  the description (``"The mother tongue of the founder of Velmora is French."``), a two-hop route.
* **Reverse statements** (``n_reverse`` facts): ``"The most famous citizen of Canada is
  {subject}."``, through the relation's reverse template (:data:`REVERSE_TEMPLATES`), at most one
  fact per (relation, object) so that the reverse prompt identifies the subject.

Every route document is in the corpus ``route_repeats`` times (default 1).

The records carry the routes as the optional fields ``alias_prompts`` and
``description_prompts`` (prompts answered by the fact's true object: the trained route's template
first, then another trained template of the fact never stated through that route) and
``reverse_prompts`` (templates with one ``{}`` slot for an *object*, answered by the subject).
Real CounterFact records simply lack them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from locedit.seeds import world_stream

#: Per relation, a template whose ``{}`` takes an object and whose answer is a subject.
REVERSE_TEMPLATES: dict[str, str] = {
    "P103": "The most famous native speaker of {} is",
    "P27": "The most famous citizen of {} is",
    "P1303": "The most famous player of the {} is",
    "P108": "The most famous employee of {} is",
    "P19": "The most famous person born in {} is",
    "P641": "The most famous player of {} is",
    "P101": "The most famous expert in {} is",
    "P176": "The most famous driver of a car made by {} is",
}

#: The defining relation of a description: it names one subject (each organisation has one founder).
DESCRIPTION = "the founder of {}"

#: ``world`` keys of the route features, all counts (absent = 0).
ROUTE_KEYS = ("n_aliases", "n_descriptions", "n_reverse")
#: ``world`` key: how many times each route document is in the corpus (absent = 1).
REPEATS_KEY = "route_repeats"


@dataclass
class Routes:
    """The route features of one world (empty when every count is 0)."""

    aliases: dict[str, str] = field(default_factory=dict)  # subject -> alias
    organisations: dict[str, str] = field(default_factory=dict)  # subject -> founded organisation
    reverse: set[tuple[str, str]] = field(default_factory=set)  # (subject, relation_id)
    # (subject, relation_id) -> template index used to state the fact through alias/description
    route_template: dict[tuple[str, str], int] = field(default_factory=dict)
    repeats: int = 1  # times each route document is in the corpus

    def description(self, subject: str) -> str | None:
        org = self.organisations.get(subject)
        return None if org is None else DESCRIPTION.format(org)


def fill(template: str, filler: str) -> str:
    """``template`` with ``filler`` in its slot, capitalised when the slot opens the sentence."""
    text = template.format(filler)
    return text[0].upper() + text[1:] if template.startswith("{}") else text


def check_route_config(world: dict, n_subjects: int, n_pairs: int) -> None:
    """Raise ``ValueError`` naming the ``world.*`` key whose count the world cannot hold.

    Args:
        n_pairs: distinct (relation, true object) pairs; each takes one reverse statement.
    """
    if int(world.get(REPEATS_KEY, 1)) < 1:
        raise ValueError(f"world.{REPEATS_KEY} must be >= 1, got {world[REPEATS_KEY]}")
    for key, limit in zip(ROUTE_KEYS, (n_subjects, n_subjects, n_pairs)):
        value = world.get(key, 0)
        if not 0 <= value <= limit:
            raise ValueError(f"world.{key} must be in [0, {limit}] for this world, got {value}")


def make_routes(facts: list, world: dict, seed: int, name_words) -> Routes:
    """The seeded route features of ``facts`` (a list of :class:`locedit.data.world.Fact`).

    Args:
        name_words: ``(n, rng) -> list[str]`` making ``n`` distinct invented two-word names
            (:func:`locedit.data.world.make_subjects`).
    """
    subjects = list(dict.fromkeys(f.subject for f in facts))
    check_route_config(
        world, len(subjects), len({(f.relation.relation_id, f.target_true) for f in facts})
    )
    routes = Routes(repeats=int(world.get(REPEATS_KEY, 1)))
    n_alias, n_desc, n_rev = (int(world.get(k, 0)) for k in ROUTE_KEYS)
    if not n_alias + n_desc + n_rev:
        return routes
    rng = np.random.default_rng(world_stream(seed, "routes"))
    aliased = [subjects[int(i)] for i in rng.permutation(len(subjects))[:n_alias]]
    described = [subjects[int(i)] for i in rng.permutation(len(subjects))[:n_desc]]
    # Fresh names share no word with a subject or with each other, so every route names one
    # subject; an organisation is one word (a fresh name's first).
    taken = {w.lower() for s in subjects for w in s.split()}
    fresh = []
    for name in name_words(2 * (n_alias + n_desc) + len(subjects), rng):
        words = {w.lower() for w in name.split()}
        if not words & taken:
            taken |= words
            fresh.append(name)
    if len(fresh) < n_alias + n_desc:  # not reached for worlds the schema allows; kept honest
        raise ValueError("world: could not invent enough distinct alias/organisation names")
    routes.aliases = dict(zip(aliased, fresh[:n_alias]))
    routes.organisations = {s: n.split()[0] for s, n in zip(described, fresh[n_alias:])}
    for f in facts:
        if f.subject in routes.aliases or f.subject in routes.organisations:
            key = (f.subject, f.relation.relation_id)
            routes.route_template[key] = f.trained[int(rng.integers(len(f.trained)))]
    used: set[tuple[str, str]] = set()
    for i in rng.permutation(len(facts)):
        f = facts[int(i)]
        pair = (f.relation.relation_id, f.target_true)
        if len(routes.reverse) < n_rev and pair not in used:
            used.add(pair)
            routes.reverse.add((f.subject, f.relation.relation_id))
    return routes


def route_documents(facts: list, routes: Routes) -> list[str]:
    """Corpus documents that state the routes, each ``routes.repeats`` times (unordered; the corpus
    shuffles them). A fact by name is stated through 3 templates and 4 profile lines; a route
    only through one sentence, so repeating it gives the model comparable exposure."""
    docs = []
    for subject, alias in routes.aliases.items():
        docs.append(f"{subject}, also known as {alias}, is well known.")
        docs.append(f"{alias} is another name of {subject}.")
    for subject, org in routes.organisations.items():
        docs.append(f"{subject} founded {org}.")
        docs.append(f"The founder of {org} is {subject}.")
    for f in facts:
        key = (f.subject, f.relation.relation_id)
        template = (
            f.relation.templates[routes.route_template[key]]
            if key in routes.route_template
            else None
        )
        for name in (routes.aliases.get(f.subject), routes.description(f.subject)):
            if name is not None:
                docs.append(f"{fill(template, name)} {f.target_true}.")
        if key in routes.reverse:
            docs.append(
                f"{REVERSE_TEMPLATES[f.relation.relation_id].format(f.target_true)} {f.subject}."
            )
    return docs * routes.repeats


def route_fields(f, routes: Routes) -> dict[str, list[str]]:
    """The optional record fields of fact ``f`` (only those it has)."""
    out: dict[str, list[str]] = {}
    key = (f.subject, f.relation.relation_id)
    if key in routes.route_template:
        trained = routes.route_template[key]
        # The trained route first; then a template the fact is stated with, by name only.
        other = next((t for t in f.trained if t != trained), None)
        templates = [f.relation.templates[t] for t in (trained, other) if t is not None]
        for field_name, name in (
            ("alias_prompts", routes.aliases.get(f.subject)),
            ("description_prompts", routes.description(f.subject)),
        ):
            if name is not None:
                out[field_name] = [fill(t, name) for t in templates]
    if key in routes.reverse:
        out["reverse_prompts"] = [REVERSE_TEMPLATES[f.relation.relation_id]]
    return out
