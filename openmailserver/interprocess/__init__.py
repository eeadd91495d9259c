"""What the worker processes of one daemon share: counters in shared memory, and the relay
that carries live events from the worker where a change commits to every other worker."""
