#!/usr/bin/env bash
# Installs the EGL/Mesa libraries that pyrender needs to render headless, where missing.
set -u
pkgs="libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing$missing"
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing) >/dev/null
elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then
  sudo apt-get install -y --no-install-recommends $missing
else
  echo "warning: pyrender needs EGL; install:$missing (Debian/Ubuntu names)" >&2
fi
exit 0
