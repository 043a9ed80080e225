#!/usr/bin/env bash
# `npm test`: every suite — rustfmt, clippy, cargo test, biome, tsc, vitest — then one closing
# line `N passed, N failed` summing them (each lint step counts as one check).
set -u
cd "$(dirname "$0")/.."
mkdir -p target
passed=0
failed=0
step() { # name, command...
  local name=$1
  shift
  echo "=== $name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $name"; fi
}

bash test/peers/install.sh
step "build (napi + tsc)" npm run --silent build
# The generated native/binding.d.ts is committed: an API change must show up in review.
api_unchanged() { ! git rev-parse --git-dir >/dev/null 2>&1 || git diff --exit-code -- native/binding.d.ts; }
step "binding.d.ts matches the committed API" api_unchanged
step "rustfmt" cargo fmt --all -- --check
step "clippy" cargo clippy --workspace --all-targets --quiet -- -D warnings
step "biome" npx biome check ts test benches

echo "=== cargo test"
cargo test --workspace --exclude qimg-native --no-fail-fast 2>&1 | tee target/cargo-test.log
cp=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^passed/) s += $i } END { print s + 0 }' target/cargo-test.log)
cf=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed/) s += $i } END { print s + 0 }' target/cargo-test.log)
if ! grep -q '^test result:' target/cargo-test.log || grep -qE '^error(\[|:)' target/cargo-test.log; then
  failed=$((failed + 1)); echo "FAILED: cargo test did not run to completion"
fi
passed=$((passed + ${cp:-0}))
failed=$((failed + ${cf:-0}))

echo "=== vitest"
rm -f target/vitest-report.json
npx vitest run
if [ -f target/vitest-report.json ]; then
  vp=$(node -e 'const r=require("./target/vitest-report.json");console.log(r.numPassedTests)')
  vf=$(node -e 'const r=require("./target/vitest-report.json");console.log(r.numFailedTests + (r.success||r.numFailedTests>0?0:1))')
  passed=$((passed + vp)); failed=$((failed + vf))
else
  failed=$((failed + 1)); echo "FAILED: vitest wrote no report"
fi

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
