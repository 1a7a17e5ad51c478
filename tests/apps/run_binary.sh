#!/usr/bin/env bash
# Runs the program given as the first argument; its exit code is the test's.
exec "$@"
