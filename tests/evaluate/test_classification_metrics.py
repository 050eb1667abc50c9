"""Classification metrics checked against hand-computed confusion matrices, F1 scores, ROC-AUC and curves."""

from __future__ import annotations

import numpy as np
import pytest

from tuneloop.evaluate.classification import MAX_CURVE_POINTS, classification_scores, multilabel_scores

# Three classes. Rows: cat->cat, cat->cat, cat->dog, dog->dog, dog->bird, bird->bird.
Y_TRUE = ["cat", "cat", "cat", "dog", "dog", "bird"]
Y_PRED = ["cat", "cat", "dog", "dog", "bird", "bird"]


def test_confusion_matrix_has_true_rows_and_predicted_columns_in_label_order():
    scores = classification_scores(Y_TRUE, Y_PRED)
    assert scores["confusion_matrix"] == {
        "labels": ["bird", "cat", "dog"],
        #          bird cat dog  (predicted)
        "matrix": [[1, 0, 0],  # true bird
                   [0, 2, 1],  # true cat
                   [1, 0, 1]],  # true dog
    }  # fmt: skip


def test_per_class_precision_recall_f1_match_the_hand_computation():
    per_class = classification_scores(Y_TRUE, Y_PRED)["per_class"]
    # bird: TP 1, FP 1 (dog->bird), FN 0 -> P 1/2, R 1, F1 = 2 * (1/2) / (3/2) = 2/3.
    assert per_class["bird"] == {"precision": 50.0, "recall": 100.0, "f1": pytest.approx(200 / 3), "support": 1}
    # cat: TP 2, FP 0, FN 1 (cat->dog) -> P 1, R 2/3, F1 = 2 * (2/3) / (5/3) = 4/5.
    assert per_class["cat"] == {"precision": 100.0, "recall": pytest.approx(200 / 3), "f1": 80.0, "support": 3}
    # dog: TP 1, FP 1 (cat->dog), FN 1 (dog->bird) -> P 1/2, R 1/2, F1 1/2.
    assert per_class["dog"] == {"precision": 50.0, "recall": 50.0, "f1": 50.0, "support": 2}


def test_macro_and_micro_averages_match_the_hand_computation():
    scores = classification_scores(Y_TRUE, Y_PRED)
    # Macro: unweighted mean over classes.
    assert scores["precision_macro"] == pytest.approx(100 * (1 / 2 + 1 + 1 / 2) / 3)
    assert scores["recall_macro"] == pytest.approx(100 * (1 + 2 / 3 + 1 / 2) / 3)
    assert scores["f1_macro"] == pytest.approx(100 * (2 / 3 + 4 / 5 + 1 / 2) / 3)  # = 100 * 59/90
    # Micro: pooled counts TP 4, FP 2, FN 2 -> P = R = F1 = 4/6, which for single-label data is the accuracy.
    for name in ("precision_micro", "recall_micro", "f1_micro", "accuracy"):
        assert scores[name] == pytest.approx(100 * 4 / 6)


def test_correct_lists_each_row_for_intervals():
    assert classification_scores(Y_TRUE, Y_PRED)["correct"] == [True, True, False, True, False, True]


def test_explicit_labels_fix_the_order_and_count_unseen_classes():
    scores = classification_scores(["yes", "no"], ["yes", "yes"], labels=["yes", "no", "maybe"])
    assert scores["confusion_matrix"]["labels"] == ["yes", "no", "maybe"]
    assert scores["confusion_matrix"]["matrix"] == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert scores["per_class"]["maybe"]["support"] == 0


def test_binary_case_by_hand():
    scores = classification_scores(["pos", "pos", "pos", "neg", "neg"], ["pos", "pos", "neg", "pos", "neg"])
    assert scores["accuracy"] == pytest.approx(60.0)
    # pos: TP 2, FP 1 (row 4), FN 1 (row 3) -> P = R = F1 = 2/3. neg: TP 1, FP 1, FN 1 -> P = R = F1 = 1/2.
    assert scores["per_class"]["pos"]["f1"] == pytest.approx(200 / 3)
    assert scores["per_class"]["neg"]["f1"] == pytest.approx(50.0)
    assert scores["f1_macro"] == pytest.approx((200 / 3 + 50) / 2)


def test_no_curves_without_probabilities():
    assert "roc_auc_macro" not in classification_scores(Y_TRUE, Y_PRED)


def test_roc_auc_of_perfectly_separating_probabilities_is_one():
    labels = ["neg", "pos"]
    probabilities = np.array([[0.1, 0.9], [0.3, 0.7], [0.6, 0.4], [0.8, 0.2]])
    scores = classification_scores(["pos", "pos", "neg", "neg"], ["pos", "pos", "neg", "neg"], labels, probabilities)
    assert scores["roc_auc_macro"] == 1.0
    assert scores["pr_curves"]["pos"]["average_precision"] == 1.0


def test_roc_auc_of_a_partly_ranked_case_is_the_share_of_correctly_ordered_pairs():
    labels = ["neg", "pos"]
    # Positives score 0.9 and 0.4, negatives 0.6 and 0.2. Pairs (pos, neg) ranked right:
    # (0.9, 0.6) yes, (0.9, 0.2) yes, (0.4, 0.6) no, (0.4, 0.2) yes -> AUC = 3/4.
    positive_scores = np.array([0.9, 0.4, 0.6, 0.2])
    probabilities = np.column_stack([1 - positive_scores, positive_scores])
    y_true = ["pos", "pos", "neg", "neg"]
    scores = classification_scores(y_true, ["pos", "neg", "pos", "neg"], labels, probabilities)
    assert scores["roc_curves"]["pos"]["auc"] == pytest.approx(0.75)
    assert scores["roc_auc_macro"] == pytest.approx(0.75)


def test_roc_auc_of_uninformative_scores_is_one_half():
    probabilities = np.full((4, 2), 0.5)
    scores = classification_scores(["a", "b", "a", "b"], ["a", "a", "a", "a"], ["a", "b"], probabilities)
    assert scores["roc_auc_macro"] == 0.5


def test_three_class_one_vs_rest_auc_is_the_mean_of_per_class_aucs():
    labels = ["bird", "cat", "dog"]
    y_true = ["bird", "cat", "cat", "dog"]
    probabilities = np.array(
        [
            [0.7, 0.2, 0.1],  # bird
            [0.1, 0.8, 0.1],  # cat
            [0.2, 0.3, 0.5],  # cat, predicted dog
            [0.1, 0.6, 0.3],  # dog, predicted cat
        ]
    )
    scores = classification_scores(y_true, ["bird", "cat", "dog", "cat"], labels, probabilities)
    curves = scores["roc_curves"]
    # bird: positive 0.7 beats all three negatives (0.1, 0.2, 0.1) -> 1.
    assert curves["bird"]["auc"] == 1.0
    # cat: positives 0.8, 0.3 vs negatives 0.2, 0.6: right pairs (0.8>0.2), (0.8>0.6), (0.3>0.2) -> 3/4.
    assert curves["cat"]["auc"] == pytest.approx(0.75)
    # dog: positive 0.3 vs negatives 0.1, 0.1, 0.5 -> 2/3.
    assert curves["dog"]["auc"] == pytest.approx(2 / 3)
    assert scores["roc_auc_macro"] == pytest.approx((1 + 0.75 + 2 / 3) / 3)


def test_curves_are_downsampled_but_keep_their_end_points():
    rng = np.random.default_rng(0)
    y_true = list(rng.choice(["a", "b"], size=2000))
    positive_scores = rng.random(2000)
    probabilities = np.column_stack([1 - positive_scores, positive_scores])
    scores = classification_scores(y_true, y_true, ["a", "b"], probabilities)
    roc, pr = scores["roc_curves"]["b"], scores["pr_curves"]["b"]
    for points in (roc["fpr"], roc["tpr"], pr["precision"], pr["recall"]):
        assert 2 <= len(points) <= MAX_CURVE_POINTS
    assert len(roc["fpr"]) == len(roc["tpr"]) and len(pr["precision"]) == len(pr["recall"])
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)
    assert (pr["recall"][0], pr["recall"][-1]) == (1.0, 0.0)


def test_a_class_without_positive_rows_has_no_roc_curve_and_is_said_to():
    probabilities = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]])
    scores = classification_scores(["a", "b"], ["a", "b"], ["a", "b", "c"], probabilities)
    assert scores["roc_auc_undefined_for"] == ["c"]
    assert set(scores["roc_curves"]) == {"a", "b"}
    assert scores["roc_auc_macro"] == 1.0


def test_probabilities_need_labels_and_the_right_shape():
    with pytest.raises(ValueError, match="pass labels"):
        classification_scores(["a"], ["a"], probabilities=np.array([[1.0]]))
    with pytest.raises(ValueError, match=r"expected \(2, 2\)"):
        classification_scores(["a", "b"], ["a", "b"], ["a", "b"], np.ones((2, 3)))


def test_mismatched_rows_are_rejected():
    with pytest.raises(ValueError, match="pair up by row"):
        classification_scores(["a", "b"], ["a"])


def test_no_rows_gives_zeros_not_an_error():
    scores = classification_scores([], [])
    assert scores["accuracy"] == 0.0 and scores["f1_macro"] == 0.0 and scores["correct"] == []


def test_multilabel_scores_match_the_hand_computation():
    labels = ["a", "b", "c"]
    y_true = [["a", "b"], ["b"], ["c"]]
    y_pred = [["a"], ["b", "c"], ["c"]]
    scores = multilabel_scores(y_true, y_pred, labels)
    # a: TP 1 -> F1 1. b: TP 1, FN 1 (row 1) -> P 1, R 1/2, F1 2/3. c: TP 1, FP 1 (row 2) -> P 1/2, R 1, F1 2/3.
    assert scores["per_class"]["a"]["f1"] == 100.0
    assert scores["per_class"]["b"] == {"precision": 100.0, "recall": 50.0, "f1": pytest.approx(200 / 3), "support": 2}
    assert scores["per_class"]["c"] == {"precision": 50.0, "recall": 100.0, "f1": pytest.approx(200 / 3), "support": 1}
    assert scores["f1_macro"] == pytest.approx(100 * (1 + 2 / 3 + 2 / 3) / 3)  # = 100 * 7/9
    # Micro: TP 3, FP 1, FN 1 -> P = R = F1 = 3/4.
    assert scores["f1_micro"] == pytest.approx(75.0)
    # Only row 3 has exactly the right set; 2 of 9 (row, label) decisions are wrong (row 1 b, row 2 c).
    assert scores["correct"] == [False, False, True]
    assert scores["subset_accuracy"] == pytest.approx(100 / 3)
    assert scores["hamming_loss"] == pytest.approx(100 * 2 / 9)


def test_multilabel_rejects_labels_outside_the_label_list():
    with pytest.raises(ValueError, match=r"\['z'\]"):
        multilabel_scores([["a"]], [["z"]], ["a", "b"])
