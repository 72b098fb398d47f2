"""One study per chapter of the book: each `run(...)` serves the models, computes every table, figure and glued
value of its chapter and returns them as a `report.Chapter`, so that a notebook cell is one call."""
