#!/usr/bin/env bash
# Your settings for webui.sh. Uncomment and edit; this file is yours (A1111-compatible names).

# Command-line arguments for webui.py, e.g. "--api --listen --port 7861 --medvram"
#export COMMANDLINE_ARGS=""

# Python 3 executable used to create the virtual environment
#python_cmd="python3"

# Virtual environment directory (relative to this folder, or absolute); "-" uses no venv
#venv_dir="venv"

# Requirements file to install
#REQS_FILE="requirements.txt"
