"""The report library: reading runs back (runs), contexts that write tables and figures
(context, figures, palette), statistics (stats, compare), published values (baselines) and the
verdict rule (fairness). The driver that runs every experiment's report is `suite.report.build`;
it never trains."""
