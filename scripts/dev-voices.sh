#!/usr/bin/env bash
# Builds the development set of speakers that the cloning tests and `parla bench clone` score
# against (docs/cloning-evaluation.md). Usage: scripts/dev-voices.sh OUT_DIR
#
# Each speaker is a folder with ref.wav (+ ref.txt where the words are known: what a user would
# upload to make a voice) and judge.wav (other words by the same speaker, used only to score).
# 16 kHz mono. The voices come from Debian packages: flite and festival voices built from recordings
# of real people, and a real recorded telephone voice (Asterisk's prompts, CC-BY-SA-3.0). Installs
# the packages it needs when run as root; otherwise says which to install.
set -euo pipefail
OUT=${1:?usage: scripts/dev-voices.sh OUT_DIR}

packages=(flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts asterisk-core-sounds-en-wav sox)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "dev-voices: please install the Debian packages ${missing[*]}" >&2
    exit 1
  fi
  echo "dev-voices: installing ${missing[*]} (Debian packages)"
  apt-get -qq update >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends "${missing[@]}" >/dev/null
fi

# Harvard sentences: what the speaker "uploads", and other words for the judge.
REF="The boy was there when the sun rose. A rod is used to catch pink salmon. The source of the huge river is the clear spring. Kick the ball straight and follow through."
JUDGE="Help the woman get back to her feet. A pot of tea helps to pass the evening. Smoky fires lack flame and heat."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
to_16k() { sox "$1" -r 16000 -c 1 -b 16 "$2" norm -1; }

speaker() {  # speaker NAME COMMAND...: COMMAND reads the text on stdin and writes $work/out.wav
  local name=$1; shift
  local dir=$OUT/$name
  mkdir -p "$dir"
  echo "$REF" | "$@"; to_16k "$work/out.wav" "$dir/ref.wav"; echo "$REF" >"$dir/ref.txt"
  echo "$JUDGE" | "$@"; to_16k "$work/out.wav" "$dir/judge.wav"
}
flite_voice() { flite -voice "$1" -t "$(cat)" -o "$work/out.wav"; }
festival_voice() { text2wave -eval "($1)" -o "$work/out.wav"; }

mkdir -p "$OUT"
for v in kal16 awb rms slt; do speaker "flite_$v" flite_voice "$v"; done
for v in kal_diphone ked_diphone cmu_us_slt_arctic_hts; do speaker "festival_$v" festival_voice "voice_$v"; done

# A real recorded speaker: telephone prompts (8 kHz). No transcript: the server makes one.
prompts=/usr/share/asterisk/sounds/en_US_f_Allison
dir=$OUT/asterisk_allison
mkdir -p "$dir"
mapfile -t odd < <(ls "$prompts"/vm-*.wav | awk 'NR % 2 == 1' | head -12)
mapfile -t even < <(ls "$prompts"/vm-*.wav | awk 'NR % 2 == 0' | head -10)
sox "${odd[@]}" -r 16000 -c 1 -b 16 "$dir/ref.wav" norm -1
sox "${even[@]}" -r 16000 -c 1 -b 16 "$dir/judge.wav" norm -1
echo "dev-voices: $(ls "$OUT" | wc -l) speakers in $OUT"
