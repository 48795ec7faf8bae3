import pytest
from tasks import TASKS, gepa_light_budget, normalize_answer, score, squad_f1


def test_label_accuracy_ignores_case_and_surrounding_space_only():
    task = TASKS["sst2"]
    assert score(task, "positive", "  Positive\n") == 1.0
    assert score(task, "positive", "positive.") == 0.0
    assert score(task, "positive", None) == 0.0


def test_squad_normalisation_and_f1():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert squad_f1("the 330 meters", "330 metres") == pytest.approx(0.5)
    assert squad_f1("", "") == 1.0
    assert squad_f1("a", "b c") == 0.0
    assert score(TASKS["xquad_en"], "Paris", "paris") == 1.0


def test_gepa_light_budget_matches_dspy_formula():
    # DSPy's auto_budget for one predictor, light: 4V + 380 (V=50 gives 580).
    assert gepa_light_budget(50) == 580
    assert gepa_light_budget(100) == 780
