@echo off
rem Hanga launcher (Windows): creates or reuses a virtual environment, installs the requirements
rem when they changed, then runs webui.py with COMMANDLINE_ARGS (set in webui-user.bat) plus its own args.
setlocal
cd /d "%~dp0"

if not defined PYTHON set PYTHON=python
if not defined VENV_DIR set "VENV_DIR=%~dp0venv"
if not defined REQS_FILE set REQS_FILE=requirements.txt
set GRADIO_ANALYTICS_ENABLED=False

if "%VENV_DIR%"=="-" goto :install
if not exist "%VENV_DIR%\Scripts\python.exe" (
    echo Creating virtual environment in %VENV_DIR%
    %PYTHON% -m venv "%VENV_DIR%" || goto :error
)
set "PYTHON=%VENV_DIR%\Scripts\python.exe"

:install
set "STAMP=%VENV_DIR%\requirements.sha256"
if "%VENV_DIR%"=="-" set "STAMP=requirements.sha256"
for /f "skip=1 delims=" %%H in ('certutil -hashfile "%REQS_FILE%" SHA256') do if not defined WANTED set "WANTED=%%H"
set "HAVE="
if exist "%STAMP%" set /p HAVE=<"%STAMP%"
if not "%HAVE%"=="%WANTED%" (
    echo Installing requirements from %REQS_FILE%
    "%PYTHON%" -m pip install --upgrade pip || goto :error
    "%PYTHON%" -m pip install -r "%REQS_FILE%" || goto :error
    >"%STAMP%" echo %WANTED%
)

"%PYTHON%" -u webui.py %*
goto :eof

:error
echo Installation failed; see the messages above.
exit /b 1
