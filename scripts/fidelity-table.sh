#!/usr/bin/env bash
# README's "Fidelity at 3-5 bits" table: weighted SNR of all-MiniLM-L6-v2's
# 40 matrices under `lsqr quantize --bpw B` (lut, scales fitted to the
# error, widths and two-level scales chosen per tensor), beside ggml's
# formats and NF4 measured on the same weights by scripts/peer-formats.py
# (numpy quantizers checked byte for byte against llama.cpp's C code with
# --c-reference). Bits per weight count everything stored.
#
#   scripts/fidelity-table.sh            # prints the markdown table
#   PEERS=0 scripts/fidelity-table.sh    # LSQR's rows only (no peer venv)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-models.sh
model="${LSQR_MODELS:-$HOME/.cache/lsqr-models}/minilm/model.safetensors"
cargo build -q --release -p lsqr-cli
lsqr=target/release/lsqr
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

rows=()
for bpw in 3.25 4.25 4.5 5.25; do
  "$lsqr" quantize "$model" -o "$work/m.lsq" --codec lut --scale-method mse --bpw "$bpw" \
    --json > "$work/q.json" 2>/dev/null
  rows+=("$(python3 - "$work/q.json" "$bpw" <<'PY'
import json, math, sys
report = json.load(open(sys.argv[1]))
q = [t for t in report["tensors"] if t.get("codec")]
bits = 8 * sum(t["stored_bytes"] for t in q) / sum(math.prod(t["shape"]) for t in q)
print(f"| LSQR `--bpw {sys.argv[2]}` | {bits:.3f} | {report['totals']['weighted_snr_db']:.2f} |")
PY
)")
done

echo "| format | bits per weight | weighted SNR (dB) |"
echo "|---|---:|---:|"
printf '%s\n' "${rows[@]}"
if [[ "${PEERS:-1}" != 0 ]]; then
  python3 scripts/peer-formats.py --json "$work/peers.json" > /dev/null
  python3 - "$work/peers.json" <<'PY'
import json, sys
peers = json.load(open(sys.argv[1]))
shown = {"Q3_K", "IQ4_XS", "Q4_K", "Q5_K", "NF4", "NF4 + double quant"}
for r in sorted(peers["results"], key=lambda r: r["bpw_nominal"]):
    if r["format"] not in shown:
        continue
    nominal, stored = r["bpw_nominal"], r["bpw_stored"]
    pad = f" ({stored:.3f} with rows padded to 256)" if abs(stored - nominal) > 1e-9 else ""
    print(f"| {r['source']} {r['format']} | {nominal:.3f}{pad} | {r['snr_db']:.2f} |")
for r in peers["llama_quantize_fallback"]:
    if r["format"] in shown:
        print(f"| ggml {r['format']} as llama-quantize stores it ({r['fallback']} for rows of 384) "
              f"| {r['bpw']:.3f} | {r['snr_db']:.2f} |")
PY
fi
