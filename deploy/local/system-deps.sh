#!/usr/bin/env bash
# System packages the test suite needs beyond Python: Debian's Chromium for the browser tests and the
# bulletin's PDF, and a CJK font (Noto CJK) so Chinese text renders in the PDF and the charts.
# Installed with apt-get when missing and we are root; otherwise a clear message and exit 1.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
missing=()
command -v chromium >/dev/null 2>&1 || [ -x "${CITYOPS_CHROMIUM:-/nonexistent}" ] || missing+=(chromium)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
{ command -v fc-list >/dev/null 2>&1 && fc-list :lang=zh family | grep -q .; } || missing+=(fontconfig fonts-noto-cjk)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  log "missing system packages: ${missing[*]}; install them (sudo apt-get install ${missing[*]}) and run again"
  exit 1
fi
log "installing ${missing[*]} with apt-get"
DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
