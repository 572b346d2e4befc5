"""The benchmarks behind `recorder bench`: one module per mode (`compose`; later `encode`,
`pipeline`), each with `HELP`, `run(args) -> dict` (the JSON report of that mode) and
`format_table(report) -> str` (the same report for people). `recorder.commands.bench` lists them.
"""
