"""rqa web app (Hugging Face Space style): `python app.py`; GRADIO_SERVER_PORT sets the port."""

import sys

from rqa.web import main

if __name__ == "__main__":
    sys.exit(main())
