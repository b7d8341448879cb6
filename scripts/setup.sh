#!/usr/bin/env bash
# Installs what building and testing Confide needs on a Debian machine. Idempotent:
# it installs only what is missing and is safe to run before every build.
set -euo pipefail

# System packages. Building needs a C compiler (bundled SQLite, ring) and pkg-config;
# the desktop app draws emoji with the Noto Color Emoji font (its tests too), and its
# snapshot tests render with wgpu on Mesa's software Vulkan driver (lavapipe); its smoke
# test runs the release binary on a virtual display (Xvfb) and takes a screenshot.
packages=(gcc pkg-config fonts-noto-color-emoji mesa-vulkan-drivers libvulkan1
  xvfb xauth x11-utils imagemagick
  libasound2-dev libopus-dev espeak-ng sox opus-tools)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is not installed; install Rust with rustup (the toolchain is pinned in rust-toolchain.toml)" >&2
  exit 1
fi
