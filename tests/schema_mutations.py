"""Mutate valid configuration files and compare the JSON Schema's verdict
with `flex-gateway validate`'s (tests/validate.rs runs this).

Usage: schema_mutations.py SCHEMA GATEWAY OUT_DIR FILE...

For every document of every FILE (each valid for both), each mutation
below is applied at every place it fits; the mutated file is checked by
the schema (python-jsonschema, draft 2020-12: check-jsonschema's engine)
and by `flex-gateway validate`:

  unknown-key  a key no table has, added to a mapping      both must agree
  wrong-type   a scalar made a mapping, a number or boolean
               made a word; a mapping or list made a number  both must agree
  misspelt     a string with letters appended (an enum
               value misspelt)                             schema refuses => validate refuses
  dropped      a key removed (a required field dropped)    schema refuses => validate refuses

"Both must agree": the same verdict. Where the schema cannot know (a
string `validate` parses further, a field the schema leaves free), only
"a document the schema refuses is refused by validate" is asserted.
Prints each disagreement and a summary; exits 1 on any disagreement.
"""

import concurrent.futures
import copy
import io
import json
import multiprocessing
import os
import subprocess
import sys

import jsonschema
from ruamel.yaml import YAML

yaml = YAML(typ="safe", pure=True)
yaml.default_flow_style = False


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.load_all(f) if d is not None]


def dump_docs(docs):
    out = io.StringIO()
    dumper = YAML(typ="safe", pure=True)  # one per call: not shared across threads
    dumper.default_flow_style = False
    for i, d in enumerate(docs):
        if i:
            out.write("---\n")
        dumper.dump(d, out)
    return out.getvalue()


def places(node, path=()):
    """Every (path, value) in a document, depth first."""
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from places(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from places(v, path + (i,))


def replaced(doc, path, fn):
    """A copy of doc with the node at path replaced by fn(node) (None: removed)."""
    doc = copy.deepcopy(doc)
    if not path:
        return fn(doc)
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    new = fn(parent[path[-1]])
    if new is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return doc


def mutations(doc):
    for path, node in places(doc):
        if isinstance(node, dict):
            yield "unknown-key", path, replaced(doc, path, lambda n: {**n, "zzNoSuchField": "zz"})
            for k in node:
                yield "dropped", path + (k,), replaced(doc, path + (k,), lambda n: None)
            if path:
                yield "wrong-type", path, replaced(doc, path, lambda n: 7)
        elif isinstance(node, list):
            if path:
                yield "wrong-type", path, replaced(doc, path, lambda n: 7)
        elif path:
            yield "wrong-type", path, replaced(doc, path, lambda n: {"zz": 1})
            if isinstance(node, (bool, int, float)):
                yield "wrong-type-word", path, replaced(doc, path, lambda n: "zz")
            if isinstance(node, str) and node and not node.startswith("${"):
                yield "misspelt", path, replaced(doc, path, lambda n: n + "zzq")


def policies_in(doc):
    """The policy names a document configures (ours and Flex's)."""
    for path, node in places(doc):
        if isinstance(node, dict):
            if len(path) >= 2 and path[-2] == "policies" and isinstance(path[-1], int):
                yield from (k for k in node if k != "order")
            ref = node.get("policyRef")
            if isinstance(ref, dict) and isinstance(ref.get("name"), str):
                yield ref["name"]


CHECK = None


def run_chunk(indices):
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(indices, pool.map(CHECK, indices)))


def kind_of(doc):
    """A document's kind, and for a binding the policy it binds."""
    if not isinstance(doc, dict):
        return None
    ref = (doc.get("spec") or {}).get("policyRef") if isinstance(doc.get("spec"), dict) else None
    return (doc.get("kind"), ref.get("name") if isinstance(ref, dict) else None)


def main():
    schema_path, gateway, out_dir = sys.argv[1:4]
    files = sys.argv[4:]
    with open(schema_path) as f:
        validator = jsonschema.Draft202012Validator(json.load(f))
    os.makedirs(out_dir, exist_ok=True)

    def schema_ok(docs):
        return all(validator.is_valid(d) for d in docs)

    def validate_ok(path):
        r = subprocess.run([gateway, "validate", "-c", path], capture_output=True, text=True)
        return r.returncode == 0, r.stderr.strip()

    cases = []
    seen = set()
    covered = set()
    for n, base in enumerate(files):
        docs = load_docs(base)
        if not schema_ok(docs):
            print(f"{base}: the schema refuses the unmutated file", flush=True)
            return 1
        name = os.path.join(out_dir, f"base{n}.yaml")
        with open(name, "w") as f:
            f.write(dump_docs(docs))
        ok, why = validate_ok(name)
        if not ok:
            print(f"{base}: validate refuses the unmutated file:\n{why}", flush=True)
            return 1
        texts = [dump_docs([d]) for d in docs]
        for i, doc in enumerate(docs):
            covered.update(policies_in(doc))
            for kind, path, mutated in mutations(doc):
                # one mutation of a kind per place of the schema (list
                # indices aside): the files repeat the same fields
                shape = (kind_of(doc), kind, tuple("*" if isinstance(p, int) else p for p in path))
                if shape in seen:
                    continue
                seen.add(shape)
                name = os.path.join(out_dir, f"m{len(cases)}.yaml")
                cases.append((base, i, kind, path, (texts, mutated), name))

    global CHECK

    def check(n):
        base, i, kind, path, (texts, mutated), name = cases[n]
        # the other documents as they were (each valid for the schema)
        with open(name, "w") as f:
            f.write("---\n".join(texts[:i] + [dump_docs([mutated])] + texts[i + 1 :]))
        s = validator.is_valid(mutated)
        v, why = validate_ok(name)
        os.unlink(name)
        if kind == "unknown-key" or kind.startswith("wrong-type"):
            agree = s == v
        else:
            agree = s or not v
        return agree, s, v, why

    # worker processes (forked: they have the cases and the validator) with
    # a few threads each, so both the CPU and the validate runs overlap
    CHECK = check
    disagreements = 0
    counts = {}
    with multiprocessing.get_context("fork").Pool(2) as pool:
        verdicts = pool.map(run_chunk, [range(k, len(cases), 32) for k in range(32)])
    results = {}
    for chunk in verdicts:
        results.update(chunk)
    for n, (base, i, kind, path, _, name) in enumerate(cases):
        agree, s, v, why = results[n]
        counts[kind] = counts.get(kind, 0) + 1
        if not agree:
            disagreements += 1
            where = ".".join(str(p) for p in path) or "(document)"
            verdict = "schema " + ("accepts" if s else "refuses") + ", validate " + ("accepts" if v else "refuses")
            first = f"\n    {why.splitlines()[0]}" if why else ""
            print(f"{base} doc {i} {kind} at {where}: {verdict}{first}", flush=True)
    print("policies: " + " ".join(sorted(covered)))
    total = sum(counts.values())
    print(f"{total} mutations ({', '.join(f'{k}: {c}' for k, c in sorted(counts.items()))}); {disagreements} disagreement(s)")
    return 1 if disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
