"""Stage 2, a simulated Match season on the catalog: applicants, their applications, interviews,
rank lists, the deferred-acceptance match, the oracle q, and the season report."""
