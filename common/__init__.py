"""What every job shares and no concept owns: typed config loading, atomic writes, schedules.

Imports nothing else of ours, so every package may use it.
"""
