#!/bin/sh
# Runs a command that must be refused: passes when it exits with EXPECTED_STATUS and its
# output (stdout and stderr) contains PATTERN (a grep -E expression).
# Usage: expect_error.sh EXPECTED_STATUS PATTERN COMMAND [ARGS...]
expected="$1"
pattern="$2"
shift 2
output=$("$@" 2>&1)
status=$?
if [ "$status" -ne "$expected" ]; then
  echo "expected exit status $expected, got $status; output:"
  echo "$output"
  exit 1
fi
if ! printf '%s\n' "$output" | grep -Eq -- "$pattern"; then
  echo "output does not match '$pattern':"
  echo "$output"
  exit 1
fi
