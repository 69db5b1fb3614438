#!/usr/bin/env bash
# Apply one SitsRun manifest and wait until the run of THIS spec succeeds or fails.
# Used by deploy/ci/github-actions.yaml and deploy/ci/gitlab-ci.yml; copy it next to them.
#
# Everything comes from the environment (never pasted into the script by the CI system):
#   MANIFEST         the SitsRun file to apply (required)
#   NAMESPACE        namespace to apply it in; leave empty when the manifest sets
#                    metadata.namespace (a kustomize overlay) or to use the kubeconfig's context
#   WAIT_SECONDS     give up waiting after this long (the run goes on in the cluster); keep it
#                    under the CI job's own limit (default 19800 s: 5.5 h)
#   DEADLINE         or: give up at this time (seconds since the epoch), shared by several calls
#   POLL_SECONDS     time between two looks at the run (default 30)
#   KUBECTL_TRIES    tries of each kubectl call before giving up (default 6, backing off)
#   KUBECTL          the kubectl binary (default: kubectl on PATH); KUBECONFIG as usual
#
# Exit codes: 0 succeeded, 1 failed (status.lastError printed), 2 still running at the bound,
# 3 kubectl kept failing, 4 usage.
set -uo pipefail

: "${MANIFEST:?set MANIFEST to the SitsRun file to apply}"
WAIT_SECONDS=${WAIT_SECONDS:-19800}
POLL_SECONDS=${POLL_SECONDS:-30}
KUBECTL_TRIES=${KUBECTL_TRIES:-6}
KUBECTL=${KUBECTL:-kubectl}
ns_args=()
if [ -n "${NAMESPACE:-}" ]; then ns_args=(--namespace "$NAMESPACE"); fi

errors=$(mktemp)
trap 'rm -f "$errors"' EXIT

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# kubectl with retries: an API server restarting or throttling must not end a job that waits for
# hours. Output goes to stdout only from the try that worked.
kube() {
  local try=1 delay=2 out
  while :; do
    if out=$("$KUBECTL" "$@" 2>"$errors"); then
      printf '%s' "$out"
      return 0
    fi
    if [ "$try" -ge "$KUBECTL_TRIES" ]; then
      log "kubectl $1 failed $try times: $(cat "$errors")"
      return 3
    fi
    log "kubectl $1 failed (try $try of $KUBECTL_TRIES), retrying in ${delay}s: $(head -c 300 "$errors")"
    sleep "$delay"
    try=$((try + 1))
    delay=$((delay * 2 > 60 ? 60 : delay * 2))
  done
}

[ -f "$MANIFEST" ] || { log "MANIFEST $MANIFEST is not a file"; exit 4; }

# The API server's answer to the apply names the object and the generation of this spec: the
# status describes this spec only once its observedGeneration has reached it.
applied=$(kube apply --server-side "${ns_args[@]}" -f "$MANIFEST" \
  -o jsonpath='{.metadata.name} {.metadata.namespace} {.metadata.generation}') || exit 3
read -r name namespace generation <<<"$applied"
if [ -z "${name:-}" ] || [ -z "${generation:-}" ]; then
  log "kubectl apply did not return a SitsRun (got: $applied)"
  exit 4
fi
log "applied SitsRun $namespace/$name, generation $generation"

fields='{.status.observedGeneration}|{.status.phase}|{.status.progress}|'
fields+='{.status.conditions[?(@.type=="Succeeded")].status}|'
fields+='{.status.conditions[?(@.type=="Failed")].status}|{.status.message}'
deadline=${DEADLINE:-$(($(date +%s) + WAIT_SECONDS))}
while :; do
  line=$(kube get sitsruns.sitsflow.dev "$name" --namespace "$namespace" -o jsonpath="$fields") || exit 3
  IFS='|' read -r observed phase progress succeeded failed message <<<"$line"
  if [ "${observed:-0}" -lt "$generation" ]; then
    log "$name: waiting for the operator to take generation $generation (status is of ${observed:-none})"
  else
    log "$name: ${phase:-Pending} ${progress:-} ${message:-}"
    if [ "$succeeded" = "True" ]; then
      kube get sitsruns.sitsflow.dev "$name" --namespace "$namespace" -o jsonpath='{.status.outputs}'
      echo
      exit 0
    fi
    if [ "$failed" = "True" ]; then
      error=$(kube get sitsruns.sitsflow.dev "$name" --namespace "$namespace" -o jsonpath='{.status.lastError}')
      log "$name failed: $error"
      printf '%s\n' "$error"
      exit 1
    fi
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    log "$name is still ${phase:-Pending} after ${WAIT_SECONDS}s; it goes on in the cluster (kubectl get sr $name -n $namespace -w)"
    exit 2
  fi
  sleep "$POLL_SECONDS"
done
