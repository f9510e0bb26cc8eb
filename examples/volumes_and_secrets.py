"""Volumes and secrets: app-wide defaults every function gets.

    apothic run examples/volumes_and_secrets.py --note "hello volume"

`App(name, secrets=[...], volumes={...})` gives each function that does not set its own the
secret's variables and the volume at its path. The entrypoint creates the secret (the secret
store lives where the control workers run: this machine, with the embedded dev server) and
reads back what the function wrote.

Expected output:
    the function saw the token: True
    note.txt: hello volume
"""

import hashlib
import os

import apothic

SECRET = "example-volumes-secrets"
notes = apothic.Volume.from_name("example-notes", create_if_missing=True)

app = apothic.App(
    "example-volumes-secrets",
    secrets=[apothic.Secret.from_name(SECRET)],
    volumes={"/notes": notes},
)


@app.function()
def write_note(text: str, token_digest: str) -> bool:
    with open("/notes/note.txt", "w") as f:
        f.write(text)
    token = os.environ.get("EXAMPLE_TOKEN", "")
    return hashlib.sha256(token.encode()).hexdigest() == token_digest  # never print a secret


@app.local_entrypoint()
def main(note: str = "hello volume") -> None:
    token = "not-a-real-token"
    apothic.Secret.objects.create(SECRET, {"EXAMPLE_TOKEN": token}, overwrite=True)
    seen = write_note.remote(note, hashlib.sha256(token.encode()).hexdigest())
    print(f"the function saw the token: {seen}")
    print(f"note.txt: {notes.read_file('note.txt').decode()}")
