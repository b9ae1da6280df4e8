"""The world-model painter (issue 6): a real paint program (env), a neural renderer of it
(renderer), an agent trained through the renderer (agent), targets, and `everloop paint`."""
