# Sourced by tools/serve-demo.sh and the benchmark scripts (not run): extracts the per-task
# subnetworks of the bundled demo checkpoint into a model repository, again only when the
# checkpoint or the extraction flags changed.
#   demo_repository DIR [taskmoe-extract flags...]
# Needs $bin (the build directory). The repository remembers the digest of the checkpoint and
# the flags it came from; extraction (a few seconds) writes beside the old repository and
# swaps, so an interrupted run never leaves a half-written one behind.
demo_repository() {
  local repository=$1 checkpoint=demo/taskmoe
  shift
  if [[ ! -f "$checkpoint/config.json" ]]; then
    echo "$(basename "$0"): $checkpoint/config.json is missing: the demo model is not in this" \
      "checkout" >&2
    exit 1
  fi
  local digest
  digest=$( (cat "$checkpoint/config.json" "$checkpoint/model.safetensors" \
    "$checkpoint/spm.model" && echo "$*") | sha256sum | cut -d' ' -f1)
  local stamp="$repository/.checkpoint-sha256"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$digest" ]]; then
    echo "$(basename "$0"): $repository is up to date with $checkpoint" >&2
    return
  fi
  echo "$(basename "$0"): extracting the per-task subnetworks of $checkpoint into" \
    "$repository (${*:-folded})" >&2
  rm -rf "$repository.new"
  "$bin/tools/taskmoe-extract" --checkpoint="$checkpoint" --out="$repository.new" "$@" \
    >/dev/null
  echo "$digest" >"$repository.new/.checkpoint-sha256"
  rm -rf "$repository"
  mv "$repository.new" "$repository"
}
