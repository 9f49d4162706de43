// Parses formulas with KaTeX and with MathJax 3 configured like GitHub's Markdown math.
//
// Reads {"formulas": [{"tex": "...", "display": true}, ...]} on stdin and prints
// {"errors": [{"index": n, "engine": "katex" | "mathjax", "message": "..."}]} on stdout.
// The exit code is 0 whenever the input could be read; a formula that fails is data, not a crash.

import katex from "katex";
import { mathjax } from "mathjax-full/js/mathjax.js";
import { TeX } from "mathjax-full/js/input/tex.js";
import { liteAdaptor } from "mathjax-full/js/adaptors/liteAdaptor.js";
import { RegisterHTMLHandler } from "mathjax-full/js/handlers/html.js";
import { STATE } from "mathjax-full/js/core/MathItem.js";
import "mathjax-full/js/input/tex/base/BaseConfiguration.js";
import "mathjax-full/js/input/tex/ams/AmsConfiguration.js";
import "mathjax-full/js/input/tex/boldsymbol/BoldsymbolConfiguration.js";
import "mathjax-full/js/input/tex/cancel/CancelConfiguration.js";
import "mathjax-full/js/input/tex/cases/CasesConfiguration.js";
import "mathjax-full/js/input/tex/color/ColorConfiguration.js";
import "mathjax-full/js/input/tex/mathtools/MathtoolsConfiguration.js";

// GitHub's set as far as it is known: no newcommand, require, physics, extpfeil or html, and
// neither noerrors nor noundefined, so that a typo is an error rather than red text.
const MATHJAX_PACKAGES = ["base", "ams", "boldsymbol", "cancel", "cases", "color", "mathtools"];

// Macros that these packages define but that GitHub's math does not render (reported by its
// users; \nobreak, \def and \newcommand need no entry: no package above defines them).
const GITHUB_UNSUPPORTED = ["operatorname", "mbox", "phantom"];
const UNSUPPORTED_PATTERN = new RegExp(String.raw`\\(${GITHUB_UNSUPPORTED.join("|")})(?![A-Za-z])`);

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    process.stdin.on("data", (chunk) => chunks.push(chunk));
    process.stdin.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    process.stdin.on("error", reject);
  });
}

function mathjaxConverter() {
  const adaptor = liteAdaptor();
  RegisterHTMLHandler(adaptor);
  const tex = new TeX({
    packages: MATHJAX_PACKAGES,
    // By default MathJax turns an error into an <merror> node; throw it instead.
    formatError: (jax, error) => {
      throw error;
    },
  });
  const document = mathjax.document("", { InputJax: tex });
  return (formula, display) => document.convert(formula, { display, end: STATE.CONVERT });
}

function oneLine(message) {
  return String(message).replace(/\s+/g, " ").trim();
}

async function main() {
  const input = JSON.parse(await readStdin());
  const convert = mathjaxConverter();
  const errors = [];
  input.formulas.forEach(({ tex, display }, index) => {
    try {
      katex.renderToString(tex, { throwOnError: true, displayMode: Boolean(display) });
    } catch (error) {
      errors.push({ index, engine: "katex", message: oneLine(error.message) });
    }
    const unsupported = tex.match(UNSUPPORTED_PATTERN);
    if (unsupported) {
      errors.push({ index, engine: "mathjax", message: `\\${unsupported[1]} is not available in GitHub's math` });
      return;
    }
    try {
      convert(tex, Boolean(display));
    } catch (error) {
      errors.push({ index, engine: "mathjax", message: oneLine(error.message) });
    }
  });
  process.stdout.write(JSON.stringify({ errors }) + "\n");
}

main().catch((error) => {
  process.stderr.write(`check_math: ${error.stack || error}\n`);
  process.exit(2);
});
