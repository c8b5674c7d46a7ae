#!/usr/bin/env bash
# Install bubblewrap (bwrap), the namespace sandbox sealed workers run in (docs/sealed.md), where it is missing.
# Without it platebench still runs: workers are then confined by Landlock and the audit hook alone.
set -u
if command -v bwrap >/dev/null 2>&1; then
  exit 0
fi
if [ "$(uname -s)" != "Linux" ]; then
  echo "platebench: no bubblewrap on $(uname -s); sealed workers use the audit hook alone (docs/sealed.md)" >&2
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO=""; fi
if command -v apt-get >/dev/null 2>&1 && { [ -z "$SUDO" ] && [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
  if $SUDO apt-get install -y -qq bubblewrap >/dev/null 2>&1 || \
     { $SUDO apt-get update -qq >/dev/null 2>&1; $SUDO apt-get install -y -qq bubblewrap >/dev/null 2>&1; }; then
    echo "platebench: installed bubblewrap ($(bwrap --version))" >&2
    exit 0
  fi
elif command -v dnf >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  dnf install -y -q bubblewrap && exit 0
fi
echo "platebench: could not install bubblewrap; sealed workers use Landlock and the audit hook (docs/sealed.md)" >&2
exit 0
