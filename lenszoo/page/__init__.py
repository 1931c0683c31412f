"""The results page's parts (``lenszoo report --page``; the page itself is put together in
``lenszoo/report_page.py``):

    select.py    which evaluation records a table shows: the released weights' record per row, the
                 seeds of a recipe, transfer, rotation and TTA evaluations
    stats.py     mean and spread over seeds, the sampling error of a test set, the "A beats B" rule
    tables.py    the Markdown tables
    figures.py   learning curves with their seed bands, the copied ROC / scatter plots
    notes.py     the notes file split into sections, each placed under the table it reads
    records.py   the evaluations a page is made of, kept beside it (``--records``) with portable paths
    sensitivity.py  the sensitivity-curve section: evaluations' per-fraction blocks merged, drawn, ranked
"""
