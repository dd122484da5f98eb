@echo off
rem Your settings for webui.bat (A1111-compatible names).

set PYTHON=
set VENV_DIR=
set COMMANDLINE_ARGS=

call webui.bat %*
