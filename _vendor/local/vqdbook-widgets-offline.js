/* vqdbook: make saved ipywidgets render offline in the built book.
 *
 * Loaded by myst-nb only on pages that have widgets, after require.js and before embed-amd.js
 * (see nb_ipywidgets_js in _config.yml). Not fetched from npm: this file is ours.
 *
 * 1. Assets. embed-amd.js (@jupyter-widgets/html-manager) resolves its assets, the Font Awesome
 *    fonts of widget icons, relative to the requirejs URL of each bundled module, which by
 *    default is <page folder>/@jupyter-widgets/... and does not exist. Mapping those module ids
 *    into this folder (_static/) makes the fonts load from _static/, where
 *    scripts/vendor_js.sh put them. The modules themselves are defined inline by embed-amd.js,
 *    so nothing else is requested from these paths.
 * 2. MathJax. ipywidgets typesets widget descriptions with the MathJax 2 API
 *    (MathJax.Hub.Queue); the book loads MathJax 3, which has no Hub, so every widget with a
 *    description threw a TypeError. A minimal Hub.Queue that forwards "Typeset" jobs to
 *    MathJax.typesetPromise fixes that and keeps LaTeX in widget labels working. Widget
 *    descriptions use $...$ (Jupyter's MathJax setting), which Sphinx's MathJax 3 does not
 *    treat as math, so the label's own text is rewritten to \(...\) first; the page-wide
 *    delimiters stay as they are.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  var base = script && script.src ? new URL(".", script.src).href : null; // .../_static/

  if (base && window.require && typeof window.require.config === "function") {
    var ids = [
      "@jupyter-widgets/base",
      "@jupyter-widgets/base7",
      "@jupyter-widgets/controls",
      "@jupyter-widgets/controls7",
      "@jupyter-widgets/output",
      "@jupyter-widgets/html-manager",
      "@jupyter-widgets/html-manager/dist/libembed-amd"
    ];
    var paths = {};
    ids.forEach(function (id) {
      // module.uri becomes <base><flat name>.js, so assets resolve to <base><asset>
      paths[id] = base + "amd-" + id.replace(/^@/, "").replace(/\//g, "-");
    });
    window.require.config({ paths: paths });
  }

  function dollarsToParens(element) {
    if (!element || !element.ownerDocument) {
      return;
    }
    var walker = element.ownerDocument.createTreeWalker(element, NodeFilter.SHOW_TEXT);
    for (var node = walker.nextNode(); node; node = walker.nextNode()) {
      var text = node.nodeValue;
      if (text.indexOf("$") < 0) {
        continue;
      }
      node.nodeValue = text
        .replace(/\$\$([^$]+)\$\$/g, "\\[$1\\]")
        .replace(/\$([^$]+)\$/g, "\\($1\\)");
    }
  }

  function addHub(mj) {
    if (!mj || typeof mj !== "object" || !mj.version || mj.Hub) {
      return;
    }
    mj.Hub = {
      Queue: function () {
        for (var i = 0; i < arguments.length; i++) {
          var job = arguments[i];
          if (!Array.isArray(job) || job[0] !== "Typeset") {
            continue;
          }
          var element = job[2];
          dollarsToParens(element);
          var ready = mj.startup && mj.startup.promise ? mj.startup.promise : Promise.resolve();
          ready
            .then(function () {
              if (typeof mj.typesetPromise === "function") {
                return mj.typesetPromise(element ? [element] : undefined);
              }
            })
            .catch(function (err) {
              console.warn("vqdbook: MathJax could not typeset a widget label", err);
            });
        }
      }
    };
  }

  // MathJax 3 replaces window.MathJax when it starts (a config object becomes MathJax.config),
  // so attach the shim to whatever object is assigned later, not only to the current one.
  var current = window.MathJax;
  addHub(current);
  try {
    Object.defineProperty(window, "MathJax", {
      configurable: true,
      enumerable: true,
      get: function () {
        return current;
      },
      set: function (value) {
        current = value;
        addHub(value);
      }
    });
  } catch (err) {
    // a non-configurable MathJax global: leave it alone
  }
})();
