"""The district simulator (issue #8): a realistic day (or N days) of a district's hotline tickets, patrol
reports, sensor readings and team feedback, with the ground truth to check the pipeline's reports against.

    sim = simulate(SimConfig(days=1, seed=7))          # pure: no Kafka, no files
    sim.messages()                                      # SimMessage(topic, key, value, at), in time order
    sim.truth.to_json()                                 # every case by docs/cases.md, hot spots, counts
    sim.write_registry(path)                            # the sensor registry the worker loads (CITYOPS_SENSORS)
    produce_simulation(settings, sim, "x60")            # to Kafka, paced (pipeline.simulate.produce)

Modules in flow order: config, spec (docs/cases.md restated), world, catalog, people, sensorsim, overrides,
lifecycle, plan, malformed, truth, generate, produce, cli; edges (how often a book edge splits one problem).
"""

from pipeline.simulate.config import SimConfig
from pipeline.simulate.generate import SimMessage, Simulation, simulate
from pipeline.simulate.truth import Truth

__all__ = ["SimConfig", "SimMessage", "Simulation", "Truth", "simulate"]
