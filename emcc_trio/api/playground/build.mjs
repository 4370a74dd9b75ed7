// Bundle src/editor.js (CodeMirror 6 from node_modules) into static/editor.js: one minified
// IIFE exposing window.EmccEditor. Deterministic: same package-lock, same bytes.
//   cd emcc_trio/api/playground && npm ci && npm run build
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const outfile = process.argv[2] ?? join(here, "static", "editor.js");

await build({
  entryPoints: [join(here, "src", "editor.js")],
  outfile,
  bundle: true,
  minify: true,
  format: "iife",
  globalName: "EmccEditor",
  target: ["es2020"],
  legalComments: "eof",
  charset: "utf8",
  sourcemap: false,
  logLevel: "warning",
  banner: { js: "/* emcc_trio playground editor: CodeMirror 6 (MIT), built by build.mjs */" },
});
