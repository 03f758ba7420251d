#!/usr/bin/env bash
# Builds a development set of references in other languages, to measure how the cloning engine
# fares when a voice is learned from a French, German or Italian recording and speaks English
# (docs/cloning-evaluation.md, "References in other languages"). Usage:
#   scripts/dev-voices-foreign.sh OUT_DIR
#
# Four speakers (espeak-ng voice variants: different pitch, formants and voice quality), each in
# four folders of the layout `parla bench clone` reads: OUT_DIR/en, OUT_DIR/fr, OUT_DIR/de and
# OUT_DIR/it. In each, a speaker's ref.wav + ref.txt say the same sentences in that language, and
# ref.lang names the language (`parla bench clone` makes the voice in it; without ref.lang a
# reference counts as English). judge.wav, used only to score, is the same in all four: the speaker
# saying other words in English, the language the cloned voice speaks. OUT_DIR/en is the control:
# the same speakers learned from English. espeak-ng is a Debian package (installed when run as root).
set -euo pipefail
OUT=${1:?usage: scripts/dev-voices-foreign.sh OUT_DIR}

packages=(espeak-ng sox)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "dev-voices-foreign: please install the Debian packages ${missing[*]}" >&2
    exit 1
  fi
  echo "dev-voices-foreign: installing ${missing[*]} (Debian packages)"
  apt-get -qq update >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends "${missing[@]}" >/dev/null
fi

# The English set's Harvard sentences (scripts/dev-voices.sh) and their translations: what the
# speaker uploads. The judge's words are English and none of them is in any reference.
declare -A REF=(
  [en]="The boy was there when the sun rose. A rod is used to catch pink salmon. The source of the huge river is the clear spring. Kick the ball straight and follow through."
  [fr]="Le garçon était là quand le soleil s'est levé. On attrape le saumon rose avec une canne. La source de ce grand fleuve est une fontaine claire. Frappe le ballon bien droit et va jusqu'au bout du geste."
  [de]="Der Junge war da, als die Sonne aufging. Mit einer Rute fängt man rosa Lachs. Die Quelle des großen Flusses ist ein klarer Brunnen. Schieß den Ball gerade und schwing richtig durch."
  [it]="Il ragazzo era lì quando sorse il sole. Si usa una canna per pescare il salmone rosa. La sorgente del grande fiume è una fonte limpida. Calcia la palla dritta e accompagna il tiro fino in fondo."
)
JUDGE="Help the woman get back to her feet. A pot of tea helps to pass the evening. Smoky fires lack flame and heat."

# name variant pitch speed: four people as espeak-ng can make them
speakers=("espeak_m3 m3 42 160" "espeak_f2 f2 68 150" "espeak_m7 m7 28 170" "espeak_f4 f4 58 165")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
say() {  # say VOICE PITCH SPEED TEXT OUT: 16 kHz mono, peak -1 dB, as scripts/dev-voices.sh
  espeak-ng -v "$1" -p "$2" -s "$3" -w "$work/out.wav" -- "$4"
  sox "$work/out.wav" -r 16000 -c 1 -b 16 "$5" norm -1
}

for entry in "${speakers[@]}"; do
  read -r name variant pitch speed <<<"$entry"
  for lang in en fr de it; do
    dir=$OUT/$lang/$name
    mkdir -p "$dir"
    espeak=$lang
    [ "$lang" = en ] && espeak=en-us
    say "$espeak+$variant" "$pitch" "$speed" "${REF[$lang]}" "$dir/ref.wav"
    echo "${REF[$lang]}" >"$dir/ref.txt"
    echo "$lang" >"$dir/ref.lang"
    say "en-us+$variant" "$pitch" "$speed" "$JUDGE" "$dir/judge.wav"
  done
done
echo "dev-voices-foreign: ${#speakers[@]} speakers in each of $OUT/{en,fr,de,it}"
