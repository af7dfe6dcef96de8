"""Console-only helpers, one role per module; pages import the modules they use:

    session   settings, the process's engine and Oppen client, login, role gates, and
              the Oppen target badge; every page starts with `session.open_page`
    errors    the error boundary: any failure becomes one Spanish message, never a traceback
    formats   how a value reads on screen: pesos, dates, state labels, literal text
    tables    rows as DataFrames, and the column types of st.dataframe
    live      runs in progress: their live progress bar, then their answers

Business logic never lives here: queries, actions, runs and database preparation are
in `sync`. Streamlit calls happen only in the script's own thread.
"""
