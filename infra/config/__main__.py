"""`python -m infra.config`: rewrite the README's config reference from `Pulumi.yaml`."""

from infra.config.reference import README, readme_with_reference

README.write_text(readme_with_reference(README.read_text()))
print(f"updated the config reference in {README}")
