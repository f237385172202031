// Builds the TypeScript SDK (sdk/ts), its tests, the web console and the API
// docs page (web/dist, embedded into avb). Run by `make web`.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const at = (...p) => join(root, ...p);

// 1. The SDK carries its own copy of the generated code.
rmSync(at("sdk/ts/src/gen"), { recursive: true, force: true });
cpSync(at("gen/ts"), at("sdk/ts/src/gen"), { recursive: true });

// 2. Type-check and emit declarations.
rmSync(at("sdk/ts/dist"), { recursive: true, force: true });
execFileSync(at("node_modules/.bin/tsc"), ["-p", at("sdk/ts")], { stdio: "inherit" });
execFileSync(at("node_modules/.bin/tsc"), ["-p", at("web")], { stdio: "inherit" });

// 3. The SDK as one ES module; its runtime dependencies stay imports.
await build({
  entryPoints: [at("sdk/ts/src/index.ts")],
  outfile: at("sdk/ts/dist/index.js"),
  bundle: true,
  format: "esm",
  platform: "neutral",
  target: "es2022",
  external: ["@bufbuild/protobuf", "@bufbuild/protobuf/*", "@connectrpc/connect", "@connectrpc/connect-web"],
  sourcemap: true,
  logLevel: "warning",
});

// 4. Tests, run by node's test runner against a live server.
rmSync(at("sdk/ts/dist-test"), { recursive: true, force: true });
rmSync(at("web/dist-test"), { recursive: true, force: true });
const nodeTests = { bundle: true, format: "esm", platform: "node", target: "node20", packages: "external", logLevel: "warning" };
await build({ ...nodeTests, entryPoints: [at("sdk/ts/test/sdk.test.ts")], outfile: at("sdk/ts/dist-test/sdk.test.mjs") });
await build({ ...nodeTests, entryPoints: [at("sdk/ts/test/webhook.test.ts")], outfile: at("sdk/ts/dist-test/webhook.test.mjs") });
await build({ ...nodeTests, entryPoints: [at("sdk/ts/test/move.test.ts")], outfile: at("sdk/ts/dist-test/move.test.mjs") });
await build({ ...nodeTests, entryPoints: [at("web/test/console.test.ts")], outfile: at("web/dist-test/console.test.mjs") });

// 5. The console: one minified bundle and its page.
for (const d of ["console", "docs"]) rmSync(at("web/dist", d), { recursive: true, force: true });
mkdirSync(at("web/dist/console"), { recursive: true });
await build({
  entryPoints: [at("web/console/main.ts")],
  outfile: at("web/dist/console/app.js"),
  bundle: true,
  minify: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  legalComments: "none",
  logLevel: "warning",
});
cpSync(at("web/console/index.html"), at("web/dist/console/index.html"));
// The chart library's few rules come first; the console's own follow.
writeFileSync(
  at("web/dist/console/style.css"),
  readFileSync(at("node_modules/uplot/dist/uPlot.min.css"), "utf8") + "\n" + readFileSync(at("web/console/style.css"), "utf8"),
);

// 6. The API docs page: Swagger UI, vendored from npm, reading /openapi.yaml.
mkdirSync(at("web/dist/docs"), { recursive: true });
for (const f of ["swagger-ui-bundle.js", "swagger-ui.css"]) {
  cpSync(at("node_modules/swagger-ui-dist", f), at("web/dist/docs", f));
}
for (const f of ["index.html", "init.js"]) cpSync(at("web/docs", f), at("web/dist/docs", f));

const js = readFileSync(at("web/dist/console/app.js"));
const size = { bytes: statSync(at("web/dist/console/app.js")).size, gzip: gzipSync(js).length };
writeFileSync(at("web/dist/console/size.json"), JSON.stringify(size) + "\n");
console.log(`console bundle: ${(size.bytes / 1024).toFixed(1)} KiB (${(size.gzip / 1024).toFixed(1)} KiB gzipped)`);
// The budget: a console that grows past it is a decision, not an accident.
const budgetGzip = 128 * 1024;
if (size.gzip > budgetGzip) {
  throw new Error(`the console bundle is ${(size.gzip / 1024).toFixed(1)} KiB gzipped, over its ${budgetGzip / 1024} KiB budget`);
}
