#!/bin/bash
# The main job, end to end on one machine (the README's first command): installs what is
# missing, builds mocdc, starts two throwaway MariaDB servers on 127.0.0.1 and runs seed 000's
# orders scenario command for command with `mocdc task`: full copy, insert/delete/update,
# pause, rows inserted while paused, resume — printing the sink table after each step.
exec "$(cd "$(dirname "$0")/.." && pwd)/examples/seed000_tasks.sh" "$@"
