from jaxcnn.cli import main


def test_demo_reproduces_every_seed_example(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    assert "[003] Ex. 12.1.2 1-D" in out and " 0 failed" in out
