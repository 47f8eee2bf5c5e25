#!/usr/bin/env bash
# A real recording the project can synthesise without a download: the two seed blog posts
# read aloud by espeak-ng (Debian package `espeak-ng`), one WAV. Used by the issue-7
# comparison in the README:  bash docs/make_speech.sh outputs/speech.wav
set -euo pipefail
out=${1:-outputs/speech.wav}
seeds=${SEEDS:-$(dirname "$0")/../../shared/seeds}
command -v espeak-ng >/dev/null || { echo "error: espeak-ng not found (apt-get install espeak-ng)" >&2; exit 2; }
mkdir -p "$(dirname "$out")"
tmp=$(mktemp -d)
cat "$seeds"/*.txt | tr -s ' \n' > "$tmp/text.txt"
espeak-ng -v en-us -s 160 -f "$tmp/text.txt" -w "$tmp/speech.wav"
mv "$tmp/speech.wav" "$out"
rm -rf "$tmp"
echo "$out"
