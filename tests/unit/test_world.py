"""The generated fact world: record shape, held-out paraphrases, neighbours, determinism."""

import re

import pytest

from locedit.data.records import subject_token_range, validate_records
from locedit.data.toy import train_tokenizer
from locedit.data.world import RELATIONS, generate_world, heldout_sentences, make_facts

WORLD = {
    "n_subjects": 24,
    "n_relations": 6,
    "relations_per_subject": 2,
    "objects_per_relation": 4,
    "heldout_templates": 2,
    "n_neighborhood": 10,
    "n_attribute": 10,
    "prefix_prob": 0.5,
    "n_filler": 20,
    "profiles_per_subject": 0,
}


@pytest.fixture(scope="module")
def world():
    return generate_world(WORLD, seed=3)


@pytest.fixture(scope="module")
def world_tokenizer(world):
    return train_tokenizer(world[1], vocab_size=400)


def test_records_have_counterfact_shape_and_validate(world, world_tokenizer):
    records, _ = world
    assert [r["case_id"] for r in records] == list(range(WORLD["n_subjects"] * 2))
    validate_records(records, world_tokenizer)
    for r in records:
        rw = r["requested_rewrite"]
        assert rw["prompt"].count("{}") == 1
        assert rw["target_new"]["str"] != rw["target_true"]["str"]
        assert len(r["paraphrase_prompts"]) == WORLD["heldout_templates"]
        assert isinstance(r["attribute_prompts"], list)


def test_at_least_six_relations_and_spread_objects(world):
    records, _ = world
    rels = {r["requested_rewrite"]["relation_id"] for r in records}
    assert len(rels) >= 6
    for rel in rels:
        objs = [r["requested_rewrite"]["target_true"]["str"] for r in records
                if r["requested_rewrite"]["relation_id"] == rel]
        assert len(set(objs)) == WORLD["objects_per_relation"]


def test_subjects_are_multi_token(world, world_tokenizer):
    records, _ = world
    for r in records:
        rw = r["requested_rewrite"]
        start, end = subject_token_range(world_tokenizer, rw["prompt"], rw["subject"])
        assert end - start >= 2, rw["subject"]


def _template_of(prompt: str, subject: str) -> str:
    return prompt.replace(subject, "{}")


def test_rewrite_prompt_is_trained_and_paraphrases_are_held_out(world):
    records, docs = world
    corpus = "\n".join(docs)
    for r in records:
        rw = r["requested_rewrite"]
        true = rw["target_true"]["str"]
        assert f"{rw['prompt'].format(rw['subject'])} {true}." in corpus
        for para in r["paraphrase_prompts"]:
            # filler sentence first, then the filled held-out template at the end
            assert not para.startswith(rw["subject"]) and para.count(".") >= 1
            stated = para.split(". ")[-1]
            assert rw["subject"] in stated
            assert f"{stated} {true}." not in corpus, (r["case_id"], stated)
            # ... but the template's form is seen with other subjects
            template = _template_of(stated, rw["subject"])
            form = re.escape(template).replace(r"\{\}", r"[A-Z]\w+ [A-Z]\w+")
            assert re.search(form, corpus), template


def test_heldout_sentences_never_in_corpus():
    facts = make_facts(WORLD, seed=5)
    from locedit.data.world import make_corpus

    corpus = set(make_corpus(facts, WORLD, seed=5))
    lines = "\n".join(corpus)
    assert all(s not in lines for s in heldout_sentences(facts))


def test_neighbours_share_relation_and_object_attributes_hold_target_new(world):
    records, _ = world
    facts = {}
    for r in records:
        rw = r["requested_rewrite"]
        facts[(rw["subject"], rw["relation_id"])] = rw["target_true"]["str"]
    templates = {rel.relation_id: rel.templates for rel in RELATIONS}

    def owner(prompt, relation_id):
        for t in templates[relation_id]:
            head, tail = t.split("{}")
            if prompt.startswith(head) and prompt.endswith(tail):
                return prompt[len(head) : len(prompt) - len(tail)]
        raise AssertionError(f"{prompt!r} matches no {relation_id} template")

    for r in records:
        rw = r["requested_rewrite"]
        assert r["neighborhood_prompts"], r["case_id"]
        for p in r["neighborhood_prompts"]:
            s = owner(p, rw["relation_id"])
            assert s != rw["subject"]
            assert facts[(s, rw["relation_id"])] == rw["target_true"]["str"]
        for p in r["attribute_prompts"]:
            s = owner(p, rw["relation_id"])
            assert facts[(s, rw["relation_id"])] == rw["target_new"]["str"]


def test_deterministic_for_a_seed_and_seed_matters():
    a = generate_world(WORLD, seed=7)
    b = generate_world(WORLD, seed=7)
    c = generate_world(WORLD, seed=8)
    assert a == b
    assert a != c


def test_descriptions_start_with_is_a(world):
    records, docs = world
    for subject in {r["requested_rewrite"]["subject"] for r in records}:
        assert any(d.startswith(f"{subject} is a ") for d in docs), subject


@pytest.mark.parametrize(
    "key,value",
    [("n_relations", 5), ("relations_per_subject", 0), ("heldout_templates", 4), ("n_subjects", 4)],
)
def test_bad_config_names_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        generate_world({**WORLD, key: value}, seed=0)


def test_subject_names_never_contain_objects():
    objects = {o.lower() for rel in RELATIONS for o in rel.objects}
    records, _ = generate_world({**WORLD, "n_subjects": 400}, seed=0)
    for r in records:
        words = {w.lower() for w in r["requested_rewrite"]["subject"].split()}
        assert len(words) == 2 and not words & objects, r["requested_rewrite"]["subject"]


def test_profile_lines_list_exactly_each_subject_s_objects():
    cfg = {**WORLD, "profiles_per_subject": 3}
    records, corpus = generate_world(cfg, seed=3)
    _, plain = generate_world(WORLD, seed=3)
    objects: dict[str, set[str]] = {}
    for r in records:
        rw = r["requested_rewrite"]
        objects.setdefault(rw["subject"], set()).add(rw["target_true"]["str"])
    profiles = [d for d in corpus if re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+: .*\.", d)]
    assert len(profiles) == 3 * len(objects)
    for line in profiles:
        subject, listed = line[:-1].split(": ")
        assert sorted(listed.split(", ")) == sorted(objects[subject])
    openings = {line.split(",")[0] for line in profiles}  # "{subject}: {first object}"
    assert len(openings) > len(objects)  # fresh orders: a subject's first object varies
    # The other documents are unchanged, and no held-out sentence appears.
    assert sorted(d for d in corpus if d not in profiles) == sorted(plain)
    assert not set(heldout_sentences(make_facts(cfg, 3))) & set(corpus)


ROUTES = {**WORLD, "n_aliases": 8, "n_descriptions": 6, "n_reverse": 10}


def _route_names(corpus: list[str]) -> dict[str, str]:
    """``name -> subject`` for every alias and description, read back from the corpus."""
    names = {}
    for d in corpus:
        if m := re.fullmatch(r"(.+), also known as (.+), is well known\.", d):
            assert m.group(2) not in names, f"alias {m.group(2)} names two subjects"
            names[m.group(2)] = m.group(1)
        if m := re.fullmatch(r"The founder of (\w+) is ([A-Z][a-z]+ [A-Z][a-z]+)\.", d):
            assert f"the founder of {m.group(1)}" not in names, "an organisation with two founders"
            names[f"the founder of {m.group(1)}"] = m.group(2)
    return names


def test_routes_resolve_to_the_subject_s_true_object():
    records, corpus = generate_world(ROUTES, seed=3)
    names = _route_names(corpus)
    facts = {(r["requested_rewrite"]["subject"], r["requested_rewrite"]["relation_id"]):
             r["requested_rewrite"]["target_true"]["str"] for r in records}  # fmt: skip
    counts = {"alias_prompts": set(), "description_prompts": set(), "reverse_prompts": 0}
    sentences = [d.split(". ")[-1] for d in corpus]  # without a filler sentence in front
    for r in records:
        rw = r["requested_rewrite"]
        subject, rel, obj = rw["subject"], rw["relation_id"], rw["target_true"]["str"]
        for key in ("alias_prompts", "description_prompts"):
            prompts = r.get(key, [])
            if not prompts:
                continue
            counts[key].add(subject)
            assert len(prompts) == 2
            for prompt in prompts:  # the route names this subject, no other
                named = [n for n in names if n.lower() in prompt.lower()]
                assert [names[n] for n in named] == [subject], (prompt, named)
                assert subject not in prompt
            # The trained route states this fact, and no route states another object for it.
            assert f"{prompts[0]} {obj}." in sentences
            for other in set(RELATIONS[0].objects + RELATIONS[1].objects) - {obj}:
                assert f"{prompts[0]} {other}." not in sentences
        for template in r.get("reverse_prompts", []):
            counts["reverse_prompts"] += 1
            stated = [s for s in sentences if s.startswith(template.format(obj) + " ")]
            assert stated == [f"{template.format(obj)} {subject}."]  # the reverse names one subject
            assert facts[(subject, rel)] == obj
    assert len(counts["alias_prompts"]) == 8 and len(counts["description_prompts"]) == 6
    assert counts["reverse_prompts"] == 10
    validate_records(records)  # raises on a malformed record


ROUTE_FIELDS = ("alias_prompts", "description_prompts", "reverse_prompts")


def test_routes_off_leave_the_world_unchanged():
    off = {**ROUTES, "n_aliases": 0, "n_descriptions": 0, "n_reverse": 0}
    assert generate_world(off, 3) == generate_world(WORLD, 3)
    records, _ = generate_world(WORLD, 3)
    assert not any(k in r for r in records for k in ROUTE_FIELDS)
    # Routes add documents; the records' CounterFact fields stay as they were.
    routed, _ = generate_world(ROUTES, 3)
    assert [{k: v for k, v in r.items() if k not in ROUTE_FIELDS} for r in routed] == records


def test_route_repeats_repeat_route_documents_only():
    _, once = generate_world(ROUTES, 3)
    _, thrice = generate_world({**ROUTES, "route_repeats": 3}, 3)
    _, plain = generate_world(WORLD, 3)
    routes = [d for d in once if d not in set(plain)]
    assert routes and len(thrice) == len(plain) + 3 * len(routes)
    assert all(thrice.count(d) == 3 * once.count(d) for d in routes)


@pytest.mark.parametrize(
    "key,value", [("n_aliases", 25), ("n_reverse", 10_000), ("route_repeats", 0)]
)
def test_bad_route_count_names_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        generate_world({**ROUTES, key: value}, seed=0)
