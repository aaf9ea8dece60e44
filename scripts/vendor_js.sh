#!/usr/bin/env bash
# Re-fetch the JavaScript the static book needs offline into _vendor/static/ (copied to the
# built book's _static/ by `html_static_path` in _config.yml) and rewrite _vendor/README.md
# with the versions and SHA-256 sums. The fetched files are committed: the book build never
# runs this script and needs no network.
#
#   bash scripts/vendor_js.sh            # fetch the pinned versions below
#   HTML_MANAGER=1.0.16 bash scripts/vendor_js.sh   # try another version
#
# Pins (keep in step with requirements.txt):
#   @jupyter-widgets/html-manager 1.0.x  <->  ipywidgets 8.1.x (ipywidgets' own range is ^1.0.1)
#   requirejs 2.3.x                        (the AMD loader embed-amd.js needs)
#   mathjax 3.2.x                          (tex-svg-full.js: one file, no fonts, all TeX extensions)
set -euo pipefail

HTML_MANAGER="${HTML_MANAGER:-1.0.15}"
REQUIREJS="${REQUIREJS:-2.3.8}"
MATHJAX="${MATHJAX:-3.2.2}"

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/_vendor/static"
command -v npm >/dev/null || { echo "error: npm is needed (apt-get install npm)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent "@jupyter-widgets/html-manager@$HTML_MANAGER" "requirejs@$REQUIREJS" "mathjax@$MATHJAX" >/dev/null
for tgz in *.tgz; do
  mkdir -p "x/${tgz%.tgz}"
  tar -xzf "$tgz" -C "x/${tgz%.tgz}"
done
hm="x/jupyter-widgets-html-manager-$HTML_MANAGER/package"
rq="x/requirejs-$REQUIREJS/package"
mj="x/mathjax-$MATHJAX/package"

rm -rf "$dest"
mkdir -p "$dest"
cp "$hm/dist/embed-amd.js" "$dest/"
# Font Awesome fonts used by widget icons: embed-amd.js asks for them next to itself.
# Every current browser takes the woff2 entry of the @font-face rule, so the rest are not needed.
cp "$hm"/dist/*.woff2 "$dest/"
cp "$rq/require.js" "$dest/"
cp "$mj/es5/tex-svg-full.js" "$dest/"

cd "$root/_vendor"
{
  cat <<HEAD
# _vendor: JavaScript for reading the book offline

Written by \`scripts/vendor_js.sh\` (do not edit by hand; rerun the script to upgrade).
\`_config.yml\` copies \`_vendor/static/*\` into the built book's \`_static/\` (\`html_static_path\`)
and points myst-nb's \`nb_ipywidgets_js\` and Sphinx's \`mathjax_path\` at these copies, so the
HTML pages load no script from a CDN.

| package (npm) | version | file | used for |
| --- | --- | --- | --- |
| @jupyter-widgets/html-manager | $HTML_MANAGER | \`dist/embed-amd.js\` -> \`static/embed-amd.js\` | renders saved ipywidgets state (bundles @jupyter-widgets/base, controls, output) |
| @jupyter-widgets/html-manager | $HTML_MANAGER | \`dist/*.woff2\` -> \`static/*.woff2\` | Font Awesome icons of widgets (requested next to embed-amd.js) |
| requirejs | $REQUIREJS | \`require.js\` -> \`static/require.js\` | AMD loader that embed-amd.js needs |
| mathjax | $MATHJAX | \`es5/tex-svg-full.js\` -> \`static/tex-svg-full.js\` | renders math (SVG output: no web fonts to fetch) |

Licenses: html-manager BSD-3-Clause (Font Awesome fonts: SIL OFL 1.1), requirejs MIT, MathJax Apache-2.0.

\`_vendor/local/vqdbook-widgets-offline.js\` is ours, not fetched (the script leaves it alone). It
is loaded between require.js and embed-amd.js and (1) maps the widget manager's AMD module
URLs into \`_static/\`, so the icon fonts above are found there instead of under
\`<page folder>/@jupyter-widgets/\`, and (2) gives MathJax 3 the \`MathJax.Hub.Queue\` call that
ipywidgets still makes (MathJax 2 API), so widget labels are typeset instead of throwing.

After changing a file here, run \`make clean-book\` before \`make book\`: Sphinx does not recopy
static files when no page changed.

## SHA-256

\`\`\`
HEAD
  (cd static && sha256sum -- *)
  echo '```'
} > README.md
echo "vendored into $dest:"
ls -la "$dest"
