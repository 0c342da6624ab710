"""Traces and analyses -> plotly figures: `figures.routing`, `figures.deltanet`. Pure functions;
widgets and notebooks call them."""
