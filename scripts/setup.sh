#!/usr/bin/env bash
# Installs what the testbed needs on a fresh Debian/Ubuntu machine, idempotently:
# Debian packages (only the missing ones), then a virtualenv in .venv with the project and
# its dev tools. Fast when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(openvswitch-switch prometheus iperf3 ethtool iputils-ping iproute2 procps kmod
  qemu-system-x86 libvirt-daemon-system libvirt-dev pkg-config debootstrap openssh-server
  openssh-client chromium)
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}; run 'make setup' as root to install them" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's udev rule makes /dev/kvm group kvm, mode 0660; containers often leave it root-only,
# which makes libvirt re-probe QEMU at every domain start (about 40 s each).
if [ -c /dev/kvm ] && getent group kvm >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm || true
fi

STAMP=.venv/.setup-stamp
if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$STAMP" -nt scripts/setup.sh ]; then
  exit 0
fi
echo "setup: creating the virtualenv in .venv"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# grafana-client pulls in urllib3-future, whose wheel rewrites the urllib3 package at every
# interpreter start (a .pth file); built from source with URLLIB3_NO_OVERRIDE=1 it installs
# beside urllib3 and niquests uses it as urllib3_future
URLLIB3_NO_OVERRIDE=1 .venv/bin/python -m pip install -q --no-binary urllib3-future \
  -e '.[dev,ml,lab]'
# Qwen2's tokenizer is built from the qwen.tiktoken file that the dashscope wheel ships (no
# hub download); only that file is used, so none of dashscope's own dependencies are needed.
.venv/bin/python -m pip install -q --no-deps dashscope==2.0.2
touch "$STAMP"
echo "setup: done"
