pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.registry",
    "tests.fixtures.sandbox",
    "tests.fixtures.worker",
]
