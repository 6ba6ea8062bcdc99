pytest_plugins = ["tests.fixtures.kafka", "tests.fixtures.sandbox", "tests.fixtures.worker"]
