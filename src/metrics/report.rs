//! Text tables: the classification report scikit-learn prints, and a confusion-matrix
//! pretty-printer.

use std::fmt;

use super::average::{Average, ZeroDivision, occurring_classes};
use super::confusion::ConfusionMatrix;
use crate::tensor::check::contract_violation;

/// Precision, recall, F1 and support per class with their averages: scikit-learn's
/// `classification_report`, from a [`ConfusionMatrix`].
///
/// Its [`Display`](fmt::Display) prints the same text as scikit-learn, character for
/// character: one row per class that occurs (as a target or a prediction), then `accuracy`,
/// `macro avg` and `weighted avg`. The numbers are also available as [`ReportRow`]s.
///
/// # Examples
///
/// ```
/// use striate::metrics::{ConfusionMatrix, ZeroDivision};
///
/// let mut cm = ConfusionMatrix::new(3);
/// cm.update(&[0, 0, 2, 2, 1], &[0, 1, 2, 2, 2]);
/// let report = cm.classification_report().with_class_names(&["ant", "bee", "cat"]);
/// assert_eq!(
///     report.to_string(),
///     "              precision    recall  f1-score   support
///
///          ant       0.50      1.00      0.67         1
///          bee       0.00      0.00      0.00         1
///          cat       1.00      0.67      0.80         3
///
///     accuracy                           0.60         5
///    macro avg       0.50      0.56      0.49         5
/// weighted avg       0.70      0.60      0.61         5
/// "
/// );
/// assert_eq!(report.rows()[2].recall, 2.0 / 3.0);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ClassificationReport {
    matrix: ConfusionMatrix,
    names: Vec<String>,
    digits: usize,
    zero_division: ZeroDivision,
}

/// One line of a [`ClassificationReport`].
#[derive(Clone, Debug, PartialEq)]
pub struct ReportRow {
    /// The class name, or `macro avg` / `weighted avg`.
    pub name: String,
    /// Precision `tp / (tp + fp)`.
    pub precision: f64,
    /// Recall `tp / (tp + fn)`.
    pub recall: f64,
    /// F1 `2·tp / (2·tp + fp + fn)`.
    pub f1: f64,
    /// The number of targets of the class (all targets on an average row).
    pub support: u64,
}

impl ConfusionMatrix {
    /// The classification report of this matrix: classes named `0`, `1`, ..., 2 decimals,
    /// [`ZeroDivision::Zero`] (scikit-learn's defaults). Change them with the `with_` methods
    /// of [`ClassificationReport`].
    pub fn classification_report(&self) -> ClassificationReport {
        ClassificationReport {
            matrix: self.clone(),
            names: (0..self.num_classes()).map(|c| c.to_string()).collect(),
            digits: 2,
            zero_division: ZeroDivision::Zero,
        }
    }

    /// A table of the counts, targets on rows and predictions on columns, named by class index.
    /// Its [`Display`](fmt::Display) is the same as the matrix's.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::metrics::ConfusionMatrix;
    ///
    /// let mut cm = ConfusionMatrix::new(2);
    /// cm.update(&[0, 1, 1], &[0, 0, 1]);
    /// let table = cm.display().with_class_names(&["no", "yes"]).to_string();
    /// assert_eq!(table, "        predicted\ntarget   no  yes\nno        1    1\nyes       0    1\n");
    /// ```
    pub fn display(&self) -> ConfusionMatrixDisplay<'_> {
        ConfusionMatrixDisplay {
            matrix: self,
            names: (0..self.num_classes()).map(|c| c.to_string()).collect(),
        }
    }
}

/// Panics unless there is one name per class.
#[track_caller]
fn class_names<S: AsRef<str>>(op: &str, matrix: &ConfusionMatrix, names: &[S]) -> Vec<String> {
    if names.len() != matrix.num_classes() {
        contract_violation(
            op,
            format_args!(
                "{} class names for {} classes",
                names.len(),
                matrix.num_classes()
            ),
            format_args!("num_classes {}", matrix.num_classes()),
        );
    }
    names.iter().map(|n| n.as_ref().to_owned()).collect()
}

impl ClassificationReport {
    /// Names the classes, one name per class of the matrix (the rows show the names of the
    /// classes that occur).
    ///
    /// # Panics
    ///
    /// If the number of names is not the number of classes.
    pub fn with_class_names<S: AsRef<str>>(mut self, names: &[S]) -> ClassificationReport {
        self.names = class_names("classification_report", &self.matrix, names);
        self
    }

    /// Prints `digits` decimals (scikit-learn's `digits=`, default 2).
    pub fn with_digits(mut self, digits: usize) -> ClassificationReport {
        self.digits = digits;
        self
    }

    /// Uses `zero_division` for classes never predicted or never present (default
    /// [`ZeroDivision::Zero`]).
    pub fn with_zero_division(mut self, zero_division: ZeroDivision) -> ClassificationReport {
        self.zero_division = zero_division;
        self
    }

    /// One row per class that occurs as a target or a prediction, in class order.
    pub fn rows(&self) -> Vec<ReportRow> {
        let zd = self.zero_division;
        let precision = self.matrix.precision_per_class(zd);
        let recall = self.matrix.recall_per_class(zd);
        let f1 = self.matrix.f1_per_class(zd);
        let support = self.matrix.support();
        occurring_classes(&self.matrix)
            .into_iter()
            .map(|c| ReportRow {
                name: self.names[c].clone(),
                precision: precision[c],
                recall: recall[c],
                f1: f1[c],
                support: support[c],
            })
            .collect()
    }

    /// The accuracy line: micro-averaged F1, which for single-label classification is the
    /// accuracy.
    pub fn accuracy(&self) -> f64 {
        self.matrix.f1(Average::Micro, self.zero_division)
    }

    /// The `macro avg` line.
    pub fn macro_avg(&self) -> ReportRow {
        self.average_row("macro avg", Average::Macro)
    }

    /// The `weighted avg` line.
    pub fn weighted_avg(&self) -> ReportRow {
        self.average_row("weighted avg", Average::Weighted)
    }

    fn average_row(&self, name: &str, average: Average) -> ReportRow {
        let zd = self.zero_division;
        ReportRow {
            name: name.to_owned(),
            precision: self.matrix.precision(average, zd),
            recall: self.matrix.recall(average, zd),
            f1: self.matrix.f1(average, zd),
            support: self.matrix.total(),
        }
    }
}

/// A score as Python's `{:>9.{digits}f}` prints it, `nan` included.
struct Score(f64, usize);

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_nan() {
            write!(f, "{:>9}", "nan")
        } else {
            write!(f, "{:>9.*}", self.1, self.0)
        }
    }
}

impl fmt::Display for ClassificationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = self.rows();
        let last_heading = "weighted avg";
        let width = rows
            .iter()
            .map(|r| r.name.chars().count())
            .chain([last_heading.len(), self.digits])
            .max()
            .unwrap_or(0);
        let digits = self.digits;
        writeln!(
            f,
            "{:>width$}  {:>9} {:>9} {:>9} {:>9}\n",
            "", "precision", "recall", "f1-score", "support"
        )?;
        let write_row = |f: &mut fmt::Formatter<'_>, row: &ReportRow| {
            writeln!(
                f,
                "{:>width$}  {} {} {} {:>9}",
                row.name,
                Score(row.precision, digits),
                Score(row.recall, digits),
                Score(row.f1, digits),
                row.support
            )
        };
        for row in &rows {
            write_row(f, row)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:>width$}  {:>9} {:>9} {} {:>9}",
            "accuracy",
            "",
            "",
            Score(self.accuracy(), digits),
            self.matrix.total()
        )?;
        write_row(f, &self.macro_avg())?;
        write_row(f, &self.weighted_avg())
    }
}

/// A [`ConfusionMatrix`] as a table with class names; from [`ConfusionMatrix::display`].
#[derive(Clone, Debug)]
pub struct ConfusionMatrixDisplay<'a> {
    matrix: &'a ConfusionMatrix,
    names: Vec<String>,
}

impl ConfusionMatrixDisplay<'_> {
    /// Names the classes, one name per class of the matrix.
    ///
    /// # Panics
    ///
    /// If the number of names is not the number of classes.
    pub fn with_class_names<S: AsRef<str>>(mut self, names: &[S]) -> Self {
        self.names = class_names("confusion_matrix_display", self.matrix, names);
        self
    }
}

impl fmt::Display for ConfusionMatrixDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let corner = "target";
        let counts = self.matrix.to_array();
        let name_width = self
            .names
            .iter()
            .map(|n| n.chars().count())
            .chain([corner.len()])
            .max()
            .unwrap_or(0);
        let count_width = counts
            .iter()
            .map(|c| c.to_string().len())
            .max()
            .unwrap_or(1);
        let column_width = self
            .names
            .iter()
            .map(|n| n.chars().count())
            .chain([count_width])
            .max()
            .unwrap_or(1);
        writeln!(f, "{:name_width$}  predicted", "")?;
        write!(f, "{corner:<name_width$}")?;
        for name in &self.names {
            write!(f, "  {name:>column_width$}")?;
        }
        writeln!(f)?;
        for (name, row) in self.names.iter().zip(counts.rows()) {
            write!(f, "{name:<name_width$}")?;
            for count in row {
                write!(f, "  {count:>column_width$}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

impl fmt::Display for ConfusionMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.display().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_prints_as_python_does() {
        assert_eq!(Score(f64::NAN, 2).to_string(), "      nan");
        assert_eq!(Score(0.125, 2).to_string(), "     0.12");
    }

    #[test]
    #[should_panic(expected = "classification_report: 2 class names for 3 classes")]
    fn wrong_number_of_names_panics() {
        let _ = ConfusionMatrix::new(3)
            .classification_report()
            .with_class_names(&["a", "b"]);
    }

    #[test]
    fn matrix_table_aligns_wide_counts() {
        let mut cm = ConfusionMatrix::new(2);
        cm.update(&vec![0; 1000], &vec![0; 1000]);
        assert_eq!(
            cm.to_string(),
            "        predicted\ntarget     0     1\n0       1000     0\n1          0     0\n"
        );
    }
}
