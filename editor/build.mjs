// Bundles src/ into dist/ (one JS and one CSS file) and copies index.html.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";

mkdirSync("dist", { recursive: true });
await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  minify: true,
  sourcemap: true,
  target: ["chrome120", "firefox120"],
  outfile: "dist/editor.js",
  logLevel: "warning",
});
copyFileSync("src/index.html", "dist/index.html");
