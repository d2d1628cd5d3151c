#!/usr/bin/env bash
# Measures the production install of the packed package as a dependent project
# sees it: `npm pack`, then `npm install --omit=dev <tarball>` in an empty temp
# project. Prints, for each variant: packages installed, bytes on disk
# (apparent size of node_modules), EBADENGINE warnings, and the largest
# packages.
#
# Variants:
#   as-packed       the tarball as is; also checks that fastify.inject (the
#                   only user of cookie, through light-my-request) works on the
#                   cookie version installed, and names that version
#   omit-optional   `npm install --omit=dev --omit=optional`: no pino-pretty
#
# Usage: scripts/measure-install.sh [variant...]   (default: both)
# Needs a build (npm run build) and the npm registry (or a warm npm cache).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
[ -f "$root/dist/src/index.js" ] || { echo "no build: run npm run build first" >&2; exit 1; }
variants=("$@")
[ ${#variants[@]} -eq 0 ] && variants=(as-packed omit-optional)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$root" && npm pack --silent --ignore-scripts --pack-destination "$work" >/dev/null)
tarball=$(ls "$work"/memory-sync-*.tgz)
node -e '
  const { execFileSync } = require("node:child_process");
  const list = JSON.parse(execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: process.argv[1], stdio: ["ignore", "pipe", "ignore"] }))[0];
  const odd = list.files.map((f) => f.path).filter((p) => /^dist\/bench\/|^test\/|\.test\.[jt]s$/.test(p));
  console.log(`tarball: ${list.size} bytes packed, ${list.unpackedSize} unpacked, ${list.entryCount} files; bench/test files shipped: ${odd.length}`);
' "$root"

measure() {
  local variant=$1 dir="$work/$1" pkg omit=(--omit=dev)
  mkdir -p "$dir"
  case $variant in
    as-packed) pkg=$tarball; echo '{"name":"dependent","version":"1.0.0","private":true}' >"$dir/package.json" ;;
    omit-optional) pkg=$tarball; omit+=(--omit=optional); echo '{"name":"dependent","version":"1.0.0","private":true}' >"$dir/package.json" ;;
    *) echo "unknown variant $variant" >&2; return 1 ;;
  esac
  (cd "$dir" && npm install "${omit[@]}" --no-audit --no-fund --prefer-offline "$pkg" >"$dir/install.log" 2>&1) || {
    cat "$dir/install.log" >&2; return 1; }
  node -e '
    const fs = require("node:fs");
    const { join } = require("node:path");
    const [dir, variant] = process.argv.slice(1);
    const lock = JSON.parse(fs.readFileSync(join(dir, "node_modules/.package-lock.json"), "utf8"));
    const names = Object.keys(lock.packages).filter((k) => k.startsWith("node_modules/"));
    const size = (p) => {
      const st = fs.lstatSync(p);
      if (!st.isDirectory()) return st.size;
      let n = 0;
      for (const e of fs.readdirSync(p)) n += size(join(p, e));
      return n;
    };
    const total = size(join(dir, "node_modules"));
    const perPackage = names
      .filter((k) => !k.slice("node_modules/".length).includes("/node_modules/"))
      .map((k) => [k.slice("node_modules/".length), size(join(dir, k))])
      .sort((a, b) => b[1] - a[1]);
    const log = fs.readFileSync(join(dir, "install.log"), "utf8");
    const ebad = [...new Set(log.split("\n").filter((l) => /EBADENGINE/.test(l)).map((l) => l.replace(/^npm warn\s+/i, "")))];
    const mb = (b) => (b / 1e6).toFixed(1) + " MB";
    console.log(`\n[${variant}] packages: ${names.length}, bytes: ${total} (${mb(total)}), EBADENGINE warnings: ${ebad.filter((l) => /package:/.test(l)).length}`);
    for (const l of ebad) console.log(`  ${l}`);
    console.log("  largest: " + perPackage.slice(0, 8).map(([n, b]) => `${n} ${mb(b)}`).join(", "));
  ' "$dir" "$variant"
  if [ "$variant" = as-packed ]; then
    # light-my-request (fastify.inject) is what uses cookie; serialize one.
    (cd "$dir" && node --input-type=module -e '
      const { createRequire } = await import("node:module");
      const require = createRequire(process.cwd() + "/node_modules/memory-sync/package.json");
      const fastify = require("fastify")();
      fastify.get("/", (req) => ({ cookie: req.headers.cookie }));
      const res = await fastify.inject({ method: "GET", url: "/", cookies: { a: "b c" } });
      const fromLmr = createRequire(require.resolve("fastify/package.json"));
      const version = createRequire(fromLmr.resolve("light-my-request"))("cookie/package.json").version;
      if (res.json().cookie !== "a=b%20c") throw new Error(`fastify.inject cookie: ${res.body}`);
      console.log(`  fastify.inject with cookies works on cookie@${version}`);
      await fastify.close();
    ')
  fi
}

for v in "${variants[@]}"; do measure "$v"; done
