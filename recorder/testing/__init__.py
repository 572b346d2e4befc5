"""Media and rooms made up for tests, demos and benchmarks: deterministic, generated, never files.

`video` holds the synthetic cameras and screens (and the participant palette checkers use);
`stills` renders single composited frames from a described room (goldens, `recorder render`).
"""
