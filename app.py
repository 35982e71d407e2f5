"""rqa web app (Hugging Face Space style): `python app.py [--papers DIR] [--index DIR]`, the same as
`rqa serve`; GRADIO_SERVER_PORT sets the port."""

import sys

from rqa.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
