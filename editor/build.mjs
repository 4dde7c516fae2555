// Bundles src/ into ../editor_api/static/ (one JS and one CSS file, and index.html): inside the
// Python package, so a wheel carries the editor as package data and the installed package serves it.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";

const out = "../editor_api/static";
mkdirSync(out, { recursive: true });
await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  minify: true,
  sourcemap: true,
  target: ["chrome120", "firefox115"],
  outfile: `${out}/editor.js`,
  logLevel: "warning",
});
copyFileSync("src/index.html", `${out}/index.html`);
