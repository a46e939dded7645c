# A Kiln Python script: `main` gets the parameters as keyword arguments, and
# what it returns becomes the execution's `result` (as JSON).
def main(name="world", **_):
    print(f"Hello, {name}!")
    return {"greeting": f"Hello, {name}!", "length": len(name)}
