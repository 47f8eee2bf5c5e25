#!/usr/bin/env bash
# Real recordings without a download: the orchestral soundtrack of Battle for Wesnoth
# (Debian package `wesnoth-1.16-music`, GPL, Ogg Vorbis), converted with sox.
#   bash docs/make_real_audio.sh [OUT_DIR]      (default outputs/real)
# writes OUT_DIR/orchestral.wav (four tracks joined: ~27 min, 16 kHz mono) and
# OUT_DIR/corpus/ (every track as 16 kHz mono FLAC: ~2.5 h in ~40 files).
set -euo pipefail
out=${1:-outputs/real}
music=/usr/share/games/wesnoth/1.16/data/core/music
if [ ! -d "$music" ]; then
  command -v apt-get >/dev/null && apt-get install -y -qq wesnoth-1.16-music sox libsox-fmt-all >/dev/null \
    || { echo "error: install wesnoth-1.16-music and sox (apt-get)" >&2; exit 2; }
fi
command -v sox >/dev/null || { echo "error: sox not found (apt-get install sox libsox-fmt-all)" >&2; exit 2; }
mkdir -p "$out/corpus"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for t in the_dangerous_symphony knalgan_theme vengeful knolls; do
  sox "$music/$t.ogg" -r 16000 -c 1 -b 16 "$tmp/$t.wav"
done
sox "$tmp"/the_dangerous_symphony.wav "$tmp"/knalgan_theme.wav "$tmp"/vengeful.wav \
    "$tmp"/knolls.wav "$tmp/orchestral.wav"
mv "$tmp/orchestral.wav" "$out/orchestral.wav"
for f in "$music"/*.ogg; do
  name=$(basename "$f" .ogg)
  [ "$name" = silence ] && continue  # 10 s of digital silence: not music
  [ -f "$out/corpus/$name.flac" ] || sox "$f" -r 16000 -c 1 -b 16 "$out/corpus/$name.flac"
done
echo "$out/orchestral.wav"; echo "$out/corpus/ ($(ls "$out/corpus" | wc -l) files)"
