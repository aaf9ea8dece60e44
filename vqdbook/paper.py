"""The paper's published numbers, transcribed from arXiv 2305.13651v1 (Dong & Mao, 2023).

These are the *paper's* values, kept as data so that the book can show them beside ours. Units
are the paper's: MNIST ε on [0, 1]; CIFAR-10 / SVHN ε on the 0–255 scale. Accuracies in %.
Nothing here is a result of this project.
"""

#: Clean test accuracy of the paper's naturally trained ResNet-18 base classifier f (Sec. 4.1).
CLEAN_ACCURACY = {"mnist": 98.85, "cifar10": 89.71, "svhn": 94.24}

#: Table 1 (MNIST, PGD40, α = ε/20): ε on [0, 1].
TABLE1_EPS = (0.0, 0.02, 0.04, 0.08, 0.16, 0.24, 0.32)
TABLE1 = [
    # method, s, k, accuracies at TABLE1_EPS
    ("Fast AdvT", None, None, (98.63, 98.12, 97.60, 96.77, 91.44, 87.69, 71.76)),
    ("MART", None, None, (98.24, 96.95, 96.07, 93.56, 90.61, 87.64, 82.58)),
    ("TRADES", None, None, (97.59, 96.68, 95.45, 93.15, 88.86, 78.14, 41.46)),
    ("RandDisc", 1, 2, (98.57, 98.07, 97.67, 96.51, 96.08, 94.56, 62.09)),
    ("pRD", 2, 2, (96.26, 96.12, 95.54, 94.26, 92.26, 91.55, 89.94)),
    ("swRD", 2, 2, (98.80, 98.28, 97.56, 96.77, 96.76, 96.52, 95.59)),
]

#: Table 2 (CIFAR-10, PGD20, α = ε/10): ε on 0–255.
TABLE2_EPS = (0, 2, 4, 8, 16)
TABLE2 = [
    ("Fast AdvT", None, None, (85.51, 73.67, 65.33, 58.65, 22.08)),
    ("MART", None, None, (83.07, 74.25, 65.39, 57.57, 32.19)),
    ("TRADES", None, None, (78.59, 71.27, 63.49, 47.39, 21.95)),
    ("RandDisc", 1, 10, (82.64, 59.10, 40.68, 19.77, 3.54)),
    ("RandDisc", 1, 20, (85.77, 50.61, 21.78, 3.82, 0.24)),
    ("RandDisc", 1, 25, (86.34, 47.31, 17.12, 2.16, 0.07)),
    ("pRD", 2, 10, (62.84, 59.11, 56.65, 52.82, 45.29)),
    ("pRD", 2, 20, (73.65, 66.31, 61.17, 53.51, 37.78)),
    ("swRD", 3, 25, (81.03, 75.32, 71.46, 66.88, 56.03)),
    ("swRD", 4, 25, (77.57, 74.03, 71.16, 68.04, 62.04)),
]

#: Table 3 (SVHN, PGD20, α = ε/10): ε on 0–255.
TABLE3_EPS = (0, 2, 4, 8, 16)
TABLE3 = [
    ("TRADES", None, None, (86.54, 65.55, 57.60, 42.70, 21.78)),
    ("RandDisc", 1, 2, (83.57, 74.11, 62.22, 47.31, 29.18)),
    ("RandDisc", 1, 4, (91.24, 69.76, 43.01, 14.30, 1.46)),
    ("RandDisc", 1, 8, (93.45, 63.48, 30.03, 5.09, 0.14)),
    ("pRD", 2, 2, (75.46, 68.89, 61.51, 52.72, 41.20)),
    ("pRD", 3, 4, (77.37, 71.59, 62.48, 51.14, 38.11)),
    ("pRD", 4, 8, (81.37, 71.76, 61.30, 47.26, 30.70)),
    ("swRD", 4, 2, (77.12, 71.43, 66.12, 57.28, 48.87)),
    ("swRD", 4, 4, (88.79, 80.90, 71.18, 57.72, 41.15)),
    ("swRD", 4, 8, (91.45, 80.22, 67.91, 48.02, 25.84)),
]
