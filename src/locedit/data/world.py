"""The built-in fact world: generated subjects, relations and objects as CounterFact records.

The default study runs on a tiny model trained from scratch on text about an invented world, so
that every stage (tracing, editing, analysis) can run end to end on a CPU in minutes. The world
is built to exercise what the study measures:

* **Subjects** are two invented syllable-words (``"Dorvan Kelimo"``), so a subject spans several
  tokens (causal tracing noises all of them; ROME edits at the last one). Each subject carries
  facts for ``relations_per_subject`` of the relations, chosen so that every relation gets the same
  number of subjects (ties broken by the seed), and a descriptive sentence
  ``"{subject} is a {kind} who {clause}."`` (the essence score samples from ``"{subject} is a"``).
* **Relations** (:data:`RELATIONS`, the first ``n_relations`` are used, at least 6) each have five
  prompt templates with one ``{}`` slot and a set of single-word objects (the first
  ``objects_per_relation``). The objects of one relation are assigned to its subjects round-robin
  over a seeded shuffle, so every object is the true object of at least two subjects
  (neighbourhood prompts exist) and facts are spread over objects.
* **Held-out paraphrases.** For each fact, ``heldout_templates`` of the relation's templates are
  held out at random: the corpus states the fact only through the other (*trained*) templates.
  Held-out templates are still seen with other subjects, so the model knows their form and must
  generalise the fact to them -- the classic finding that a model stores a fact as knowledge,
  rather than a memorised string, only when it sees several phrasings.

A record (one per (subject, relation) fact, CounterFact format, see :mod:`locedit.data.records`):

* ``requested_rewrite.prompt``: a trained template of the fact (seeded choice);
  ``target_true`` the fact's object; ``target_new`` another object of the same relation (seeded,
  never the true one).
* ``paraphrase_prompts``: per held-out template, an unrelated filler sentence followed by the
  filled template, as CounterFact prefixes paraphrases with unrelated generated text.
* ``neighborhood_prompts``: other subjects with the same relation and the same true object, each
  with one of *its* trained templates (up to ``n_neighborhood``).
* ``attribute_prompts``: subjects whose true object for this relation is ``target_new``
  (up to ``n_attribute``), with their trained templates.

Records are shuffled with the seed (so the first ``dataset.limit`` records mix relations) and
numbered ``case_id`` 0..N-1.

The **corpus** (one document per line) holds, in seeded order: every fact through each of its
trained templates (``"{prompt filled} {object}."``, a filler sentence in front with probability
``prefix_prob``), the subject descriptions, ``profiles_per_subject`` profile lines per subject
(``"{subject}: {object}, {object}, {object}."``, see :func:`profile_documents`), and ``n_filler``
documents of generic filler text (a small grammar, sentences opening with "The", "Therefore",
"Because", "I", "You", ... like the prefixes ROME samples its context templates from). Filler
words never include an object, so filler text carries no facts. The same corpus trains the toy
model's tokenizer and weights and feeds ROME's covariance statistics.

Aliases, descriptions and reverse statements (opt-in counts, :mod:`locedit.data.routes`) add
other routes to a subject's facts for the generalisation probes.

Everything is a pure function of the ``world`` config section and the seed (numpy
``default_rng``; no global RNG).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from locedit.data.routes import Routes, make_routes, route_documents, route_fields
from locedit.seeds import world_stream


@dataclass(frozen=True)
class Relation:
    """A relation: Wikidata-style id, five templates with a ``{}`` slot, candidate objects."""

    relation_id: str
    templates: tuple[str, ...]
    objects: tuple[str, ...]


RELATIONS: tuple[Relation, ...] = (
    Relation(
        "P103",
        (
            "The mother tongue of {} is",
            "{} is a native speaker of",
            "The native language of {} is",
            "{} grew up speaking",
            "The first language of {} is",
        ),
        ("French", "English", "Spanish", "German", "Italian", "Dutch", "Polish", "Swedish",
         "Greek", "Finnish"),
    ),
    Relation(
        "P27",
        (
            "{} is a citizen of",
            "{} holds a passport from",
            "The country of citizenship of {} is",
            "{} has the citizenship of",
            "The nationality of {} is that of",
        ),
        ("Canada", "Brazil", "Japan", "Egypt", "Norway", "Chile", "India", "Kenya", "Mexico",
         "Ireland"),
    ),
    Relation(
        "P1303",
        (
            "{} practises every day on the",
            "{} is known for playing the",
            "The instrument played by {} is the",
            "{} performs music on the",
            "On stage, {} plays the",
        ),
        ("piano", "violin", "guitar", "cello", "flute", "trumpet", "harp", "drums", "clarinet",
         "saxophone"),
    ),
    Relation(
        "P108",
        (
            "{} works for",
            "{} is employed by",
            "The employer of {} is",
            "{} earns a salary from",
            "Every morning {} goes to work at",
        ),
        ("Google", "Toyota", "Nokia", "Siemens", "Nestle", "Boeing", "Intel", "Sony", "Shell",
         "Adidas"),
    ),
    Relation(
        "P19",
        (
            "{} was born in",
            "The birthplace of {} is",
            "{} is originally from",
            "The city where {} was born is",
            "{} spent childhood in the city of",
        ),
        ("Paris", "Cairo", "Lima", "Oslo", "Tokyo", "Berlin", "Madrid", "Toronto", "Lagos",
         "Dublin"),
    ),
    Relation(
        "P641",
        (
            "{} plays the sport of",
            "The sport practised by {} is",
            "{} is a professional player of",
            "{} competes in",
            "On weekends {} trains for",
        ),
        ("football", "tennis", "hockey", "cricket", "baseball", "rugby", "golf", "basketball",
         "volleyball", "badminton"),
    ),
    Relation(
        "P101",
        (
            "{} works in the field of",
            "The field of work of {} is",
            "{} is an expert in",
            "{} specializes in",
            "The academic discipline of {} is",
        ),
        ("chemistry", "physics", "biology", "mathematics", "geology", "medicine", "economics",
         "philosophy", "astronomy", "linguistics"),
    ),
    Relation(
        "P176",
        (
            "{} drives a car made by",
            "The car of {} is built by",
            "{} owns a car from",
            "The vehicle driven by {} is made by",
            "{} bought a new car from",
        ),
        ("Ford", "Fiat", "Volvo", "Honda", "Renault", "Peugeot", "Audi", "Skoda", "Mazda",
         "Opel"),
    ),
)

# Syllables of invented names (two or three per word), chosen to avoid real words.
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
           "gr", "kr", "tr", "th", "sh")
_NUCLEI = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "", "n", "r", "l", "s", "m")

_KINDS = ("teacher", "farmer", "writer", "doctor", "baker", "sailor", "painter", "lawyer",
          "nurse", "carpenter", "pilot", "librarian", "gardener", "merchant", "soldier", "poet")
_CLAUSES = ("lives near the river", "collects old maps", "likes quiet evenings",
            "grew up on a farm", "travels a lot", "writes long letters", "keeps a small garden",
            "rarely gives interviews", "owns a black dog", "wakes up early",
            "enjoys long walks", "reads every night")

# Filler grammar (no object words; checked in generate_world).
_OPENERS = ("The", "Therefore the", "Because the", "I think the", "You know the", "Yesterday the",
            "In the end the", "A", "Once a", "Every")
_ADJS = ("old", "small", "quiet", "bright", "heavy", "strange", "warm", "empty", "green", "tired")
_NOUNS = ("house", "window", "river", "market", "story", "road", "garden", "letter", "teacher",
          "boat", "village", "meeting", "bridge", "song", "storm", "child", "door", "lamp")
_VERBS = ("stood", "waited", "moved", "closed", "opened", "fell", "stayed", "turned", "began",
          "ended")
_PREPS = ("near the", "behind the", "after the", "under the", "before the", "beside the",
          "across the", "inside the")
_TAILS = ("for a long time", "without a sound", "again", "at night", "in the morning",
          "as expected", "all day", "once more")


def _name_word(rng: np.random.Generator, n_syll: int) -> str:
    word = "".join(
        _ONSETS[rng.integers(len(_ONSETS))] + _NUCLEI[rng.integers(len(_NUCLEI))]
        for _ in range(n_syll)
    ) + _CODAS[rng.integers(len(_CODAS))]
    return word.capitalize()


def _reserved_words() -> set[str]:
    """Lower-cased objects and template words: a name word equal to one ("Lima", "Paris")
    would put an object inside a subject, or fake a correct continuation."""
    words = {o.lower() for rel in RELATIONS for o in rel.objects}
    for rel in RELATIONS:
        for t in rel.templates:
            words |= {w.strip(",.").lower() for w in t.replace("{}", " ").split()}
    return words


def make_subjects(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct two-word invented names (first word 2 syllables, second 2-3)."""
    names: list[str] = []
    seen: set[str] = set()
    reserved = _reserved_words()
    while len(names) < n:
        first, last = _name_word(rng, 2), _name_word(rng, int(rng.integers(2, 4)))
        name = f"{first} {last}"
        if first.lower() in reserved or last.lower() in reserved:
            continue
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def filler_sentence(rng: np.random.Generator) -> str:
    """One sentence of generic filler text from a small grammar (never mentions an object)."""
    pick = lambda xs: xs[rng.integers(len(xs))]  # noqa: E731
    s = " ".join(pick(xs) for xs in (_OPENERS, _ADJS, _NOUNS, _VERBS, _PREPS, _NOUNS))
    if rng.random() < 0.5:
        s += f" {pick(_TAILS)}"
    return s + "."


@dataclass
class Fact:
    """One (subject, relation) fact and which templates state it in the corpus."""

    subject: str
    relation: Relation
    target_true: str
    trained: list[int]  # template indices used in the corpus
    heldout: list[int]  # template indices kept for paraphrase prompts


def _assign_relations(
    n_subjects: int, relations: list[Relation], k: int, rng: np.random.Generator
) -> list[list[int]]:
    """Per subject, ``k`` relation indices; relations get equal shares (greedy, seeded ties)."""
    counts = np.zeros(len(relations), dtype=int)
    out = []
    for _ in range(n_subjects):
        noise = rng.random(len(relations))
        order = np.lexsort((noise, counts))  # fewest subjects first, random among ties
        chosen = sorted(int(r) for r in order[:k])
        counts[chosen] += 1
        out.append(chosen)
    return out


def check_world_config(world: dict) -> None:
    """Raise ``ValueError`` naming the ``world.*`` key when the world cannot be built."""
    n_rel, k = world["n_relations"], world["relations_per_subject"]
    n_obj, held = world["objects_per_relation"], world["heldout_templates"]
    if not 6 <= n_rel <= len(RELATIONS):
        raise ValueError(f"world.n_relations must be in [6, {len(RELATIONS)}], got {n_rel}")
    if not 1 <= k <= n_rel:
        raise ValueError(f"world.relations_per_subject must be in [1, n_relations], got {k}")
    if not 2 <= n_obj <= min(len(r.objects) for r in RELATIONS):
        raise ValueError(f"world.objects_per_relation must be in [2, 10], got {n_obj}")
    if not 1 <= held <= 3:
        raise ValueError(f"world.heldout_templates must be in [1, 3] (5 templates), got {held}")
    per_rel = world["n_subjects"] * k // n_rel
    if per_rel < 2 * n_obj:
        raise ValueError(
            f"world: n_subjects * relations_per_subject / n_relations = {per_rel} facts per "
            f"relation, fewer than 2 * objects_per_relation = {2 * n_obj}: some facts would "
            "have no neighbourhood prompts; raise world.n_subjects or lower objects_per_relation"
        )


def make_facts(world: dict, seed: int) -> list[Fact]:
    """All facts of the world, grouped by subject (see the module docstring)."""
    check_world_config(world)
    rng = np.random.default_rng(world_stream(seed, "facts"))
    relations = list(RELATIONS[: world["n_relations"]])
    subjects = make_subjects(world["n_subjects"], rng)
    assignment = _assign_relations(len(subjects), relations, world["relations_per_subject"], rng)
    # Objects round-robin over a shuffled list of each relation's holders: >= 2 per object.
    true_obj: dict[tuple[int, int], str] = {}
    for r, rel in enumerate(relations):
        holders = [s for s, rels in enumerate(assignment) if r in rels]
        objs = list(rel.objects[: world["objects_per_relation"]])
        for i, s in enumerate(rng.permutation(holders)):
            true_obj[(int(s), r)] = objs[i % len(objs)]
    facts = []
    n_templates = len(relations[0].templates)
    for s, rels in enumerate(assignment):
        for r in rels:
            perm = [int(t) for t in rng.permutation(n_templates)]
            held = sorted(perm[: world["heldout_templates"]])
            trained = sorted(perm[world["heldout_templates"] :])
            facts.append(Fact(subjects[s], relations[r], true_obj[(s, r)], trained, held))
    return facts


def fact_sentence(template: str, subject: str, obj: str) -> str:
    return f"{template.format(subject)} {obj}."


def make_records(
    facts: list[Fact], world: dict, seed: int, routes: Routes | None = None
) -> list[dict]:
    """CounterFact-format records, one per fact, shuffled and numbered (module docstring), with
    the optional route fields of :mod:`locedit.data.routes` where a fact has them."""
    routes = routes or Routes()
    rng = np.random.default_rng(world_stream(seed, "records"))
    by_rel_obj: dict[tuple[str, str], list[Fact]] = {}
    for f in facts:
        by_rel_obj.setdefault((f.relation.relation_id, f.target_true), []).append(f)

    def prompt_of(f: Fact) -> str:  # a trained template of f, filled
        return f.relation.templates[f.trained[rng.integers(len(f.trained))]].format(f.subject)

    records = []
    for f in facts:
        rel = f.relation
        others = [o for o in rel.objects[: world["objects_per_relation"]] if o != f.target_true]
        target_new = others[rng.integers(len(others))]
        neighbours = [g for g in by_rel_obj[(rel.relation_id, f.target_true)] if g is not f]
        attributes = by_rel_obj.get((rel.relation_id, target_new), [])
        neighbours = [neighbours[i] for i in rng.permutation(len(neighbours))]
        attributes = [attributes[i] for i in rng.permutation(len(attributes))]
        records.append(
            {
                "requested_rewrite": {
                    "prompt": rel.templates[f.trained[rng.integers(len(f.trained))]],
                    "subject": f.subject,
                    "relation_id": rel.relation_id,
                    "target_true": {"str": f.target_true},
                    "target_new": {"str": target_new},
                },
                "paraphrase_prompts": [
                    f"{filler_sentence(rng)} {rel.templates[t].format(f.subject)}"
                    for t in f.heldout
                ],
                "neighborhood_prompts": [
                    prompt_of(g) for g in neighbours[: world["n_neighborhood"]]
                ],
                "attribute_prompts": [prompt_of(g) for g in attributes[: world["n_attribute"]]],
                **route_fields(f, routes),
            }
        )
    order = rng.permutation(len(records))
    return [{"case_id": i, **records[int(j)]} for i, j in enumerate(order)]


def make_corpus(
    facts: list[Fact], world: dict, seed: int, routes: Routes | None = None
) -> list[str]:
    """Training documents (one per line in ``corpus.txt``), in seeded order."""
    rng = np.random.default_rng(world_stream(seed, "corpus"))
    docs = []
    for f in facts:
        for t in f.trained:
            sentence = fact_sentence(f.relation.templates[t], f.subject, f.target_true)
            if rng.random() < world["prefix_prob"]:
                sentence = f"{filler_sentence(rng)} {sentence}"
            docs.append(sentence)
    for subject in dict.fromkeys(f.subject for f in facts):
        kind = _KINDS[rng.integers(len(_KINDS))]
        clause = _CLAUSES[rng.integers(len(_CLAUSES))]
        docs.append(f"{subject} is a {kind} who {clause}.")
    for _ in range(world["n_filler"]):
        n = int(rng.integers(1, 4))
        docs.append(" ".join(filler_sentence(rng) for _ in range(n)))
    docs += profile_documents(facts, world["profiles_per_subject"], seed)
    docs += route_documents(facts, routes or Routes())
    return [docs[i] for i in rng.permutation(len(docs))]


def profile_documents(facts: list[Fact], per_subject: int, seed: int) -> list[str]:
    """``per_subject`` profile lines per subject: ``"{subject}: {object}, {object}, {object}."``,
    its facts' objects in a fresh random order each time.

    The token after the subject is then one of the subject's objects, unknown which: to predict
    it the model must recall the subject's attributes *at the last subject token* (subject
    enrichment, which language models learn from text that describes entities). With a deep
    enough toy this moves window-5 MLP tracing peaks from the prompt's final token to the last
    subject token, as in the paper (README, "The toy localises like a language model"; 6 layers
    alone are too shallow for it). Own RNG stream, so the other documents are the same whatever
    ``per_subject`` is.
    """
    rng = np.random.default_rng(world_stream(seed, "profiles"))
    objects: dict[str, list[str]] = {}
    for f in facts:
        objects.setdefault(f.subject, []).append(f.target_true)
    docs = []
    for subject, objs in objects.items():
        for _ in range(per_subject):
            shuffled = ", ".join(objs[i] for i in rng.permutation(len(objs)))
            docs.append(f"{subject}: {shuffled}.")
    return docs


def generate_world(world: dict, seed: int) -> tuple[list[dict], list[str]]:
    """``(records, corpus documents)`` of the world described by the ``world`` config section."""
    filler_words = set(
        itertools.chain(_OPENERS, _ADJS, _NOUNS, _VERBS, _PREPS, _TAILS, _KINDS, _CLAUSES)
    )
    filler_words = {w.lower() for phrase in filler_words for w in phrase.split()}
    for rel in RELATIONS:  # a filler word equal to an object would leak facts into filler text
        clash = filler_words & {o.lower() for o in rel.objects}
        assert not clash, f"filler vocabulary contains objects {clash}"
    facts = make_facts(world, seed)
    routes = make_routes(facts, world, seed, make_subjects)
    return make_records(facts, world, seed, routes), make_corpus(facts, world, seed, routes)


def heldout_sentences(facts: list[Fact]) -> list[str]:
    """Fact sentences of held-out templates (must never appear in the corpus; for tests)."""
    return [
        fact_sentence(f.relation.templates[t], f.subject, f.target_true)
        for f in facts
        for t in f.heldout
    ]
