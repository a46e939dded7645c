// Builds the console into one folder (argument 1): app.js (every module and
// library bundled and minified by esbuild), app.css and index.html. The kiln
// binary embeds that folder (host/build.rs); nothing is fetched at run time.
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, "dist"));

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await build({
  entryPoints: [join(here, "src/main.jsx")],
  outfile: join(out, "app.js"),
  bundle: true,
  minify: true,
  format: "esm",
  target: ["chrome110", "firefox115", "safari16"],
  jsx: "automatic",
  jsxImportSource: "preact",
  legalComments: "eof",
  logLevel: "warning",
});
for (const file of ["index.html", "app.css", "favicon.svg"]) {
  await copyFile(join(here, "src", file), join(out, file));
}
