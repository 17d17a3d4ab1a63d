"""`python -m serving.keys <key>`: the digest to put in SERVING_API_KEY_DIGESTS (the key itself stays with its owner)."""

import sys

from serving.settings import key_digest

if __name__ == "__main__":
    for key in sys.argv[1:] or [sys.stdin.readline().strip()]:
        print(key_digest(key))
