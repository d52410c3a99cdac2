"""A self-test of the hot path's standard-library replacements on this interpreter.

``python3 -m imagemapper.selftest`` runs in the image build (Dockerfile), so the runtime
image's own Python, whatever version its base ships, is checked where the tests cannot
run: :mod:`imagemapper.fastjson` must fail like :mod:`json` (always ``ValueError``) in a
bare ``python3 -S`` process that never imported ``json``, and refuse NaN. Exit 1 names
the case that failed.
"""

from __future__ import annotations

import subprocess
import sys

BAD = ["[1,]", '{"a":1,}', "{'a':1}", "[1", '{"a"', '"\\x"', "[1] x", "", "[" * 200 + "1,"]
DEEP = ["[" * 1000 + "]" * 1000, '{"a":' * 5000 + "1" + "}" * 5000]  # accepted or ValueError
PROBE = """
import sys
from imagemapper import fastjson
bad = 0
bad_texts, deep_texts = sys.stdin.read().split("\\1")
for text in bad_texts.split("\\0"):
    try:
        fastjson.loads(text)
        bad += 1
    except ValueError:
        pass
for text in deep_texts.split("\\0"):
    try:
        fastjson.loads(text)
    except ValueError:
        pass
for value in (float("nan"), float("inf")):
    try:
        fastjson.dumps(value)
        bad += 1
    except ValueError:
        pass
ok = fastjson.loads('{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
print(bad, ok, "json" in sys.modules, "re" in sys.modules)
"""


def main() -> int:
    out = subprocess.run([sys.executable, "-S", "-c", PROBE], input="\0".join(BAD) + "\1" + "\0".join(DEEP),
                         capture_output=True, text=True, check=False)
    if out.stdout.split() != ["0", "True", "False", "False"]:
        sys.stderr.write(f"imagemapper.selftest failed on Python {sys.version.split()[0]}: "
                         f"{out.stdout.strip()} {out.stderr.strip()}\n")
        return 1
    sys.stdout.write(f"imagemapper.selftest: fastjson ok on Python {sys.version.split()[0]}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
